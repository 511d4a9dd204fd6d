"""verify:<m>:tp2: tensor parallel degree 2 (two real processes) against the single-process model."""

from __future__ import annotations

from modbuild.verify.record import Record

BOUNDS = {"logits": 1e-5, "grads_rel": 1e-4}


def record_from(model: str, result: dict) -> Record:
    record = Record(model, "tp2", bounds=dict(BOUNDS))
    record.metrics = {
        "logits": result["logits_max_abs"],
        "loss": result["loss_abs"],
        "grads_rel": result["grad_max_rel"],
    }
    record.notes.append(f"largest gradient error in {result.get('worst_param')}")
    return record


def check_tp2(model: str) -> Record:
    from modbuild.dist.tp_check import run_tp2

    return record_from(model, run_tp2(model))
