"""verify:<m>:modular: the generated model against the modular file's meaning (runtime loader).

Two independent mechanisms build the same model: the converter (source transformation) and
`load_modular` (cloned parent code, no transformation). With the same weights they must agree
bit for bit: the generated code is the modular code, op for op.
"""

from __future__ import annotations

from pathlib import Path

import paddle

from modbuild.runtime import load_modular
from modbuild.verify.paddle_run import max_abs, randomize, run
from modbuild.verify.record import Record
from modbuild.verify.specs import TINY, generated, left_padded_batch, spec


def build_pair(root: Path, model: str, **config):
    """(generated model, runtime-loaded modular model), same config, same weights."""
    sp = spec(model)
    modeling, configuration = generated(model)
    loaded = load_modular(root / "modular" / model / f"modular_{model}.py", root=root)
    kwargs = {**TINY, **sp.config, **config}
    name = sp.head_class
    paddle.seed(0)
    ours = getattr(modeling, name)(getattr(configuration, f"{sp.camel}Config")(**kwargs))
    paddle.seed(0)
    reference = getattr(loaded, name)(getattr(loaded, f"{sp.camel}Config")(**kwargs))
    return ours, reference


def check_modular(root: Path, model: str) -> Record:
    record = Record(model, "modular", bounds={"logits": 0.0, "loss": 0.0, "grads": 0.0, "state_dict": 0.0})
    ours, reference = build_pair(root, model)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ref_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    mismatched = sorted(set(shapes) ^ set(ref_shapes)) + sorted(
        k for k in shapes if k in ref_shapes and shapes[k] != ref_shapes[k]
    )
    record.metrics["state_dict"] = float(len(mismatched))
    if mismatched:
        record.notes.append(f"state dicts differ: {mismatched[:5]}")
        return record
    randomize(ours, norm_mean=spec(model).norm_mean)
    reference.set_state_dict(ours.state_dict())
    batch = left_padded_batch(ours.config.vocab_size)
    a, b = run(ours, batch), run(reference, batch)
    record.metrics["logits"] = max_abs(a.logits, b.logits)
    record.metrics["loss"] = abs(a.loss - b.loss)
    record.metrics["grads"] = max((max_abs(a.grads[k], b.grads[k]) for k in a.grads), default=0.0)
    record.metrics["params"] = float(sum(p.size for p in ours.parameters()))
    return record
