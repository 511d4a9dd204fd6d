"""TP=2 vs single-process equality of the generated models, in real 2-process gloo runs on CPU.

Each launch costs ~15 s (mostly imports), so the cases share launches: two in all.
"""

import pytest

from modbuild.verify.tp_check import BOUNDS, record_from
from modbuild.verify.tp_run import run_tp2, run_tp2_cases

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

COLLECTIVES_MAX_ABS = 1e-6  # the shimmed collectives against numpy: they only move and add fp32 values

# Untied and tied-embedding (tied_logits: _c_identity + _c_concat) for both models, plus sequence parallel on and
# off for qwen2 in the same launch, so that SP can be compared with TP alone as well as with the single process.
CASES = ["llama", "llama:tied", "qwen2", "qwen2:tied", "qwen2:sp"]


@pytest.fixture(scope="module")
def report():
    return run_tp2_cases(CASES)


def _assert_within_bounds(result):
    """The tp2 record's bounds (modbuild/verify/tp_check.py), the same verdict `doit verify` gives."""
    record = record_from(result["model"], result)
    assert set(record.metrics) == set(BOUNDS)
    assert record.passed, f"{result.get('case', result['model'])}: {record.failures()}, {record.notes}"


def test_collectives_match_numpy(report):
    """The shimmed (or, on GPU, fleet's) _c_identity/_mp_allreduce/_c_concat/_c_split/reduce_scatter, fwd and bwd."""
    assert set(report["collectives"]) == {"_c_identity", "_mp_allreduce", "_c_concat", "_c_split", "reduce_scatter"}
    assert report["collectives_max_abs"] <= COLLECTIVES_MAX_ABS, report["collectives"]


@pytest.mark.parametrize("spec", CASES)
def test_tp2_matches_single_process(report, spec):
    (result,) = [r for r in report["cases"] if r["case"] == spec]
    assert result["split_params"] > 0  # the TP model really holds shards
    _assert_within_bounds(result)


def test_sequence_parallel_on_off_equal(report):
    (result,) = [r for r in report["cases"] if r["case"] == "qwen2:sp"]
    assert result["sequence_parallel"]
    # SP only moves where tokens are split; the arithmetic per token is unchanged.
    assert result["sp_off_logits_max_abs"] <= BOUNDS["logits"]
    assert result["sp_off_grad_max_rel"] <= BOUNDS["grads_rel"]


def test_run_tp2_single_case_llama_sequence_parallel_tied():
    """The one-case API, on the other model, with SP and tied logits together."""
    result = run_tp2("llama", sequence_parallel=True, tied=True)
    assert result["model"] == "llama" and result["sequence_parallel"] and result["tied"]
    assert result["collectives_max_abs"] <= COLLECTIVES_MAX_ABS
    _assert_within_bounds(result)
