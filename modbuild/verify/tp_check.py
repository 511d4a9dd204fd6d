"""verify:<m>:tp2: tensor parallel degree 2 (two real processes) against the single-process model.

`modbuild.verify.tp_run` measures (in `doit verify`, in the run's TP pool); this record decides. The bounds, the only ones the TP check has (the
tests apply them through `record_from` too):

- ``logits``: max |logits(TP=2) - logits(TP=1)| <= 1e-5, over the whole left-padded batch;
- ``loss``: |loss(TP=2) - loss(TP=1)| <= 1e-5;
- ``grads_rel``: per parameter, max |grad(TP=2, gathered) - grad(TP=1)| / max |grad(TP=1)|, worst parameter <= 1e-4.

Both sides hold the same fp32 weights (`paddle_run.randomize`); only the order of the reductions differs.
"""

from __future__ import annotations

from modbuild.verify.record import Record

BOUNDS = {"logits": 1e-5, "loss": 1e-5, "grads_rel": 1e-4}


def record_from(model: str, result: dict) -> Record:
    """The tp2 record of one TP result (`run_tp2`'s dict, or one of `run_tp2_cases`'s ``cases``)."""
    record = Record(model, "tp2", bounds=dict(BOUNDS))
    record.metrics = {
        "logits": result["logits_max_abs"],
        "loss": result["loss_abs"],
        "grads_rel": result["grad_max_rel"],
    }
    record.notes.append(f"largest gradient error in {result.get('worst_param')}")
    if "exit_after_result" in result:
        record.notes.append(f"the launch exited with {result['exit_after_result']} after writing its result")
    return record


def check_tp2(model: str) -> Record:
    from modbuild.verify.tp_results import tp_result
    from modbuild.verify.tp_run import pool_mode, pool_request, run_tp2, run_tp_checks

    if pool_mode(model) == "tp2":  # no train-tp2 to share a request with
        return record_from(model, pool_request(model, "tp2"))
    return record_from(model, tp_result(model, "tp2", run_tp_checks, alone=run_tp2))
