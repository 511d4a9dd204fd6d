"""verify:<m>:tp2: tensor parallel degree 2 (two real processes) against the single-process model.

The logits bound is 1e-5 for logits of magnitude up to 10 and grows with them beyond that: two
ranks sum partial products in another order, and at |logit| = 12 (Gemma's tiny config) one fp32
ulp is already 1e-6, so a fixed 1e-5 would demand agreement to about ten ulps.
"""

from __future__ import annotations

from modbuild.verify.record import Record

BOUNDS = {"logits": 1e-5, "grads_rel": 1e-4}
LOGIT_SCALE = 10.0


def record_from(model: str, result: dict) -> Record:
    record = Record(model, "tp2", bounds=dict(BOUNDS))
    scale = max(1.0, result["logits_scale"] / LOGIT_SCALE)
    record.metrics = {
        "logits": result["logits_max_abs"] / scale,
        "logits_abs": result["logits_max_abs"],
        "loss": result["loss_abs"],
        "grads_rel": result["grad_max_rel"],
    }
    if scale > 1:
        record.notes.append(f"logits up to {result['logits_scale']:.1f}: the abs difference is divided by {scale:.2f}")
    record.notes.append(f"largest gradient error in {result.get('worst_param')}")
    return record


def check_tp2(model: str) -> Record:
    from modbuild.dist.tp_check import run_tp2

    return record_from(model, run_tp2(model))
