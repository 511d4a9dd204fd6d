"""Checkpoints: one directory per save (``step_00000100``), written under a temporary name and renamed
(``modbuild.atomic.atomic_directory``), the last N kept.

A checkpoint holds ``model.pdparams``, ``optimizer.pdopt`` (Paddle's optimizer state, which carries the LR
scheduler's), and ``state.pkl``: the step, the data position, the LR scheduler and loss-scaler states, and the
Paddle, NumPy and Python RNG states. ``meta.json`` lists every file with its size and SHA-256, so a truncated or
corrupt file is named before anything is loaded. A SIGTERM during a save leaves only a ``.step_*.tmp`` directory,
which is never read; the previous checkpoint stays the latest.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from modbuild.atomic import atomic_directory, atomic_write

FORMAT = 1
_NAME = re.compile(r"step_(\d{8})")
MODEL, OPTIMIZER, STATE, META = "model.pdparams", "optimizer.pdopt", "state.pkl", "meta.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or does not fit the model; the message names the file."""


@dataclass
class TrainState:
    """What, beside the model and optimizer, a resumed run needs to continue exactly."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of `epoch` consumed
    lr_scheduler: dict = field(default_factory=dict)
    scaler: dict | None = None
    rng: dict = field(default_factory=dict)


def capture_rng() -> dict[str, Any]:
    return {"paddle": paddle.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(rng: dict[str, Any]) -> None:
    paddle.set_rng_state(rng["paddle"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _rename_optimizer_state(state: dict, names: dict[str, str]) -> dict:
    """Optimizer state keys start with a parameter's unique name (``linear_3.w_0_moment1_0``), which depends on how
    many layers the process built before; a checkpoint stores them under the structured name instead
    (``qwen2.layers.0.mlp.up_proj.weight_moment1_0``). `names` maps one to the other (either direction)."""
    ordered = sorted(names, key=len, reverse=True)  # longest first: linear_1.w_0 must not match linear_1.w_01

    def rename(key: str) -> str:
        for old in ordered:
            if key == old or key.startswith(old + "_"):
                return names[old] + key[len(old) :]
        return key

    out = {}
    for key, value in state.items():
        if key == "master_weights":
            out[key] = {rename(k): v for k, v in value.items()}
        elif key == "LR_Scheduler":
            out[key] = value
        else:
            out[rename(key)] = value
    return out


def _unique_to_structured(model: paddle.nn.Layer) -> dict[str, str]:
    return {p.name: name for name, p in model.named_parameters()}


def local_state(model: paddle.nn.Layer, optimizer) -> tuple[dict, dict]:
    """This process's model state and optimizer state, the latter keyed by structured parameter names."""
    return model.state_dict(), _rename_optimizer_state(optimizer.state_dict(), _unique_to_structured(model))


def save(output_dir: Path, model_state: dict, opt_state: dict, state: TrainState, keep_last: int) -> Path:
    """Write ``output_dir/step_<step>`` atomically, then delete all but the newest `keep_last`."""
    target = Path(output_dir) / f"step_{state.step:08d}"
    with atomic_directory(target) as tmp:
        paddle.save(model_state, str(tmp / MODEL))
        paddle.save(opt_state, str(tmp / OPTIMIZER))
        (tmp / STATE).write_bytes(pickle.dumps(state))
        files = {
            name: {"bytes": (tmp / name).stat().st_size, "sha256": _digest(tmp / name)}
            for name in (MODEL, OPTIMIZER, STATE)
        }
        atomic_write(tmp / META, json.dumps({"format": FORMAT, "step": state.step, "files": files}, indent=1))
    for old in checkpoints(output_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest first (temporary ``.step_*`` directories are not listed)."""
    root = Path(output_dir)
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name)] if root.is_dir() else []
    return sorted(found, key=lambda p: p.name)


def resolve(ckpt_dir: str | Path) -> Path:
    """A checkpoint directory, or the newest one in an output directory; CheckpointError if there is none."""
    path = Path(ckpt_dir)
    if not path.exists():
        raise CheckpointError(f"Engine.save_load.ckpt_dir: {path} does not exist")
    if (path / META).exists() or _NAME.fullmatch(path.name):
        return path
    found = checkpoints(path)
    if not found:
        raise CheckpointError(f"Engine.save_load.ckpt_dir: {path} holds no checkpoint (no step_* directory)")
    return found[-1]


def _verified(path: Path) -> dict:
    meta_file = path / META
    try:
        meta = json.loads(meta_file.read_text())
        files = meta["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{meta_file}: missing: {path} is not a complete checkpoint") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{meta_file}: corrupt ({exc})") from None
    for name, want in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing from the checkpoint")
        size = file.stat().st_size
        if size != want["bytes"]:
            raise CheckpointError(
                f"{file}: truncated or altered: {size} bytes, the checkpoint recorded {want['bytes']}"
            )
        if _digest(file) != want["sha256"]:
            raise CheckpointError(f"{file}: corrupt: its SHA-256 differs from the one recorded in {META}")
    return meta


def check_shapes(file: Path, saved: dict, expected: dict[str, list[int]]) -> None:
    """Every parameter present, none extra, each of the expected shape; else CheckpointError naming the file."""
    missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{file}: parameters differ from the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, shape in expected.items():
        if list(saved[name].shape) != list(shape):
            raise CheckpointError(
                f"{file}: {name} has shape {list(saved[name].shape)} in the checkpoint, {list(shape)} in the model"
            )


def read(path: Path) -> tuple[dict, dict, TrainState]:
    """Verify every file of a checkpoint, then read (model state, optimizer state, training state)."""
    _verified(path)
    model_state = paddle.load(str(path / MODEL))
    opt_state = paddle.load(str(path / OPTIMIZER))
    state = pickle.loads((path / STATE).read_bytes())
    if not isinstance(state, TrainState):
        raise CheckpointError(f"{path / STATE}: not a training state ({type(state).__name__})")
    return model_state, opt_state, state


def restore(path: Path, model: paddle.nn.Layer, optimizer, model_state: dict, opt_state: dict) -> None:
    """Check the parameters' names and shapes, then set the model and optimizer (nothing is set on an error)."""
    check_shapes(path / MODEL, model_state, {n: list(t.shape) for n, t in model.state_dict().items()})
    structured = {v: k for k, v in _unique_to_structured(model).items()}
    model.set_state_dict(model_state)
    set_state(optimizer, _rename_optimizer_state(opt_state, structured))


def load(path: Path, model: paddle.nn.Layer, optimizer) -> TrainState:
    """`read` and `restore` in one process."""
    model_state, opt_state, state = read(path)
    restore(path, model, optimizer, model_state, opt_state)
    return state


def set_state(obj, state: dict) -> None:
    """`obj.set_state_dict(state)` for an optimizer or LR scheduler. LinearWarmup's state carries its inner
    scheduler's under an extra key, which paddle restores and then warns about as "unused": that warning is muted."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "There are some unused values in state_dict")
        obj.set_state_dict(state)
