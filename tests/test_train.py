"""The `train` check can fail: break one thing in the Paddle side's training and the check must fail, naming the
first step over a bound and what exceeded there. One HF run (Llama) is shared by every case."""

import json

import pytest

from modbuild.verify.train_check import check_train, hf_reference, tp_record
from modbuild.verify.train_loop import TrainConfig

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CFG = TrainConfig()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return hf_reference("llama", tmp_path_factory.mktemp("train"), CFG)


def test_unbroken_training_passes(reference, tmp_path):
    record = check_train("llama", tmp_path, CFG, reference=reference)
    assert record.passed, (record.failures(), record.notes)
    assert record.metrics["steps"] == CFG.steps and record.metrics["first_step_over"] == 0
    assert record.metrics["lr"] == 0.0  # the two schedulers agree exactly
    curves = json.loads((tmp_path / "reports" / "train" / "llama.json").read_text())
    assert set(curves) == {"HF (torch)", "ours (paddle)"}
    assert (tmp_path / "reports" / "train" / "llama.png").stat().st_size > 0
    # it trains: the loss falls
    assert curves["HF (torch)"]["loss"][-1] < curves["HF (torch)"]["loss"][0] - 0.5


# knob on the Paddle side -> (the first step over a bound, the metric named there, the failing record metric).
# Decay on the norm weights starts to act at step 2 (step 1's learning rate is 0 in the warm-up) and shows in the
# gradient norm from step 4 (1.2e-4), in the loss (4e-4) and the parameters (3e-3) later: any step from 2 on.
MUTATIONS = {
    "warmup-one-step-shorter": ({"warmup_offset": -1}, 2, "lr", "lr"),
    "clipping-off": ({"clip_on": False}, 1, "clipped_norm", "clipped_norm"),
    "accumulation-mis-scaled": ({"accumulation_scale": 2.0}, 1, "grad_norm", "grad_norm"),
    "weight-decay-on-norm-weights": ({"decay_norms": True}, None, "", "decay_mismatch"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutation_fails_and_names_what_differs(reference, name):
    knobs, step, metric, failing = MUTATIONS[name]
    record = check_train("llama", None, CFG, CFG.mutated(**knobs), reference=reference)
    assert not record.passed
    assert any(f.startswith(f"{failing} =") for f in record.failures()), record.failures()
    (first,) = [n for n in record.notes if n.startswith("first step over a bound")]
    if step is None:
        assert 2 <= record.metrics["first_step_over"] <= CFG.steps, record.notes
        return
    assert record.metrics["first_step_over"] == step, record.notes
    assert f"first step over a bound: {step} (" in first and f"{metric} " in first, first


def test_decay_mismatch_names_the_norm_weights(reference):
    record = check_train("llama", None, CFG, CFG.mutated(decay_norms=True), reference=reference)
    (note,) = [n for n in record.notes if n.startswith("weight decay differs")]
    assert "layernorm.weight" in note or "norm.weight" in note, note
    assert record.metrics["decay_mismatch"] == 2 * 2 + 1  # two norms per layer, two layers, the final norm


def test_tp_record_flags_a_diverging_step():
    """The train-tp2 verdict, from curves: equal runs pass, a loss off by 1e-3 at step 7 fails there."""
    steps = 20
    ref = {"loss": [5.0 - 0.1 * i for i in range(steps)], "lr": [1e-3] * steps}
    ref |= {"grad_norm": [3.0] * steps, "clipped_norm": [1.0] * steps}
    same = {"curves": ref, "params_max_rel": 1e-7, "worst_param": "x"}
    assert tp_record("llama", "train-tp2", same, ref).passed
    loss = list(ref["loss"])
    loss[6] *= 1 + 1e-3
    off = {**same, "curves": {**ref, "loss": loss}}
    record = tp_record("llama", "train-tp2", off, ref)
    assert not record.passed and record.metrics["first_step_over"] == 7, record.notes


def _imports(folder: str) -> set[str]:
    """Every module the .py files of modbuild/<folder> import (at any depth of the file)."""
    import ast
    from pathlib import Path

    found = set()
    for path in (Path(__file__).resolve().parents[1] / "modbuild" / folder).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("folder", ["engine", "tp"])
def test_the_engine_and_tp_do_not_import_verify(folder):
    """One direction only: verify uses tp (the TP checks) and the shared optimizer (modbuild/optim.py) as the
    engine does; neither the engine nor tp depends on the verification package."""
    assert not [m for m in _imports(folder) if m.startswith("modbuild.verify")]
