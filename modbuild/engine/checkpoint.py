"""Checkpoints: one directory per save (``step_00000100``), written under a temporary name and renamed
(``modbuild.atomic.atomic_directory``), the last N kept.

A checkpoint holds no pickle, so loading one runs no code, whoever wrote it:

- ``model.safetensors``: the model's tensors;
- ``optimizer.safetensors``: every tensor of the optimizer's state (moments, beta powers, master weights) and of
  the loss scaler's, keyed by their path in the state (``optimizer/<param>_moment1_0``,
  ``optimizer/master_weights/<param>``, ``scaler/scale``);
- ``state.json``: the rest: step, epoch and data position, the LR scheduler's and the scaler's other values, the
  optimizer's non-tensor values (each tensor a ``{"$tensor": key}`` reference into ``optimizer.safetensors``), and
  the Paddle, NumPy and Python RNG states as numbers.

``meta.json`` lists every file with its size and SHA-256, so a truncated or corrupt file is named before anything is
loaded. A SIGTERM during a save leaves only a ``.step_*.tmp`` directory, which is never read; the previous
checkpoint stays the latest. Format 1 (``model.pdparams``, ``optimizer.pdopt``, ``state.pkl``: pickles) is refused,
never unpickled.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paddle
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from modbuild.atomic import atomic_directory, atomic_write

FORMAT = 2
_NAME = re.compile(r"step_(\d{8})")
MODEL, OPTIMIZER, STATE, META = "model.safetensors", "optimizer.safetensors", "state.json", "meta.json"
_TENSOR = "$tensor"  # a JSON leaf {"$tensor": key}: the array stored under `key` in optimizer.safetensors


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or does not fit the model; the message names the file."""


@dataclass
class TrainState:
    """What, beside the model and optimizer, a resumed run needs to continue exactly (all of it JSON-able but
    `scaler`, whose tensors go to ``optimizer.safetensors``)."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of `epoch` consumed
    lr_scheduler: dict = field(default_factory=dict)
    scaler: dict | None = None
    rng: dict = field(default_factory=dict)


def capture_rng() -> dict[str, Any]:
    """The Paddle, NumPy and Python RNG states as JSON values (ints, floats, strings)."""
    paddle_states = []
    for state in paddle.get_rng_state():
        # GeneratorState pickles itself as (device, seed, offset, the engine's text as bytes): kept as numbers
        device, seed, offset, engine = state.__getstate__()
        paddle_states.append({"device": device, "seed": seed, "offset": offset, "engine": bytes(engine).decode()})
    kind, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "paddle": paddle_states,
        "numpy": {"kind": kind, "key": key.tolist(), "pos": pos, "has_gauss": has_gauss, "cached_gaussian": cached},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def _rng_states(rng: dict[str, Any]) -> tuple[list[tuple], tuple, tuple]:
    """`capture_rng`'s values as the tuples the three RNGs take; ValueError/KeyError/TypeError if malformed."""
    paddle_states = [
        (int(s["device"]), int(s["seed"]), int(s["offset"]), list(str(s["engine"]).encode())) for s in rng["paddle"]
    ]
    np_rng = rng["numpy"]
    key = np.asarray(np_rng["key"], dtype=np.uint32)
    if str(np_rng["kind"]) != "MT19937" or key.shape != (624,):
        raise ValueError("the NumPy RNG state is not an MT19937 key of 624 words")
    numpy_state = ("MT19937", key, int(np_rng["pos"]), int(np_rng["has_gauss"]), float(np_rng["cached_gaussian"]))
    py = rng["python"]
    gauss = py["gauss_next"]
    python_state = (int(py["version"]), tuple(int(i) for i in py["internal"]), None if gauss is None else float(gauss))
    return paddle_states, numpy_state, python_state


def restore_rng(rng: dict[str, Any]) -> None:
    """Set the RNGs from `capture_rng`'s values. Paddle's GeneratorState is rebuilt from numbers through its
    ``__setstate__`` (what unpickling would call), never from pickle bytes."""
    from paddle.base.libpaddle import GeneratorState

    paddle_states, numpy_state, python_state = _rng_states(rng)
    states = []
    for values in paddle_states:
        state = GeneratorState.__new__(GeneratorState)
        state.__setstate__(values)
        states.append(state)
    paddle.set_rng_state(states)
    np.random.set_state(numpy_state)
    random.setstate(python_state)


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


def _is_array(value: Any) -> bool:
    return isinstance(value, paddle.Tensor | np.ndarray)


def _array(value: paddle.Tensor | np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(value.numpy() if isinstance(value, paddle.Tensor) else value)


def to_json_tree(value: Any, path: str, arrays: dict[str, np.ndarray]) -> Any:
    """`value` as JSON values, each tensor replaced by a ``{"$tensor": path}`` reference and put in `arrays`."""
    if _is_array(value):
        arrays[path] = _array(value)
        return {_TENSOR: path}
    if isinstance(value, dict):
        return {str(k): to_json_tree(v, f"{path}/{k}", arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_tree(v, f"{path}/{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{path}: a {type(value).__name__} cannot be stored in a checkpoint's {STATE}")


def from_json_tree(value: Any, arrays: dict[str, np.ndarray], file: Path) -> Any:
    """`to_json_tree` reversed: references replaced by their arrays (CheckpointError for a dangling one)."""
    if isinstance(value, dict):
        if set(value) == {_TENSOR}:
            key = value[_TENSOR]
            if not isinstance(key, str) or key not in arrays:
                raise CheckpointError(f"{file}: refers to tensor {key!r}, which {OPTIMIZER} does not hold")
            return arrays[key]
        return {k: from_json_tree(v, arrays, file) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json_tree(v, arrays, file) for v in value]
    return value


def save(output_dir: Path, model_state: dict, opt_state: dict, state: TrainState, keep_last: int) -> Path:
    """Write ``output_dir/step_<step>`` atomically, then delete all but the newest `keep_last`."""
    target = Path(output_dir) / f"step_{state.step:08d}"
    model_arrays = {name: _array(value) for name, value in model_state.items()}
    arrays: dict[str, np.ndarray] = {}
    doc = {
        "step": state.step,
        "epoch": state.epoch,
        "batch": state.batch,
        "lr_scheduler": to_json_tree(state.lr_scheduler, "lr_scheduler", arrays),
        "scaler": to_json_tree(state.scaler, "scaler", arrays),
        "rng": state.rng,
        "optimizer": to_json_tree(opt_state, "optimizer", arrays),
    }
    with atomic_directory(target) as tmp:
        save_file(model_arrays, str(tmp / MODEL))
        save_file(arrays, str(tmp / OPTIMIZER))
        atomic_write(tmp / STATE, json.dumps(doc))
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
        files, version = meta["files"], meta.get("format")
    except FileNotFoundError:
        raise CheckpointError(f"{meta_file}: missing: {path} is not a complete checkpoint") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{meta_file}: corrupt ({exc})") from None
    if version != FORMAT:
        raise CheckpointError(
            f"{meta_file}: checkpoint format {version!r}, this modbuild reads format {FORMAT} only; format 1 "
            "(model.pdparams, optimizer.pdopt, state.pkl) holds pickles, which loading would execute, so it is "
            "never loaded: train again (or resume from a checkpoint this version wrote)"
        )
    for name in (MODEL, OPTIMIZER, STATE):
        if name not in files:
            raise CheckpointError(f"{meta_file}: does not list {name}: {path} is not a complete checkpoint")
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


def _tensors(file: Path) -> dict[str, np.ndarray]:
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: not a safetensors file ({exc})") from None


def _state(file: Path, arrays: dict[str, np.ndarray]) -> tuple[dict, TrainState]:
    """(optimizer state, training state) from ``state.json`` (JSON only: no value in it can run code)."""
    try:
        doc = json.loads(file.read_bytes())
        state = TrainState(
            step=int(doc["step"]),
            epoch=int(doc["epoch"]),
            batch=int(doc["batch"]),
            lr_scheduler=from_json_tree(doc["lr_scheduler"], arrays, file),
            scaler=from_json_tree(doc["scaler"], arrays, file),
            rng=dict(doc["rng"]),
        )
        optimizer = from_json_tree(doc["optimizer"], arrays, file)
        if not isinstance(optimizer, dict) or not isinstance(state.lr_scheduler, dict):
            raise TypeError("the optimizer or LR scheduler state is not a mapping")
        _rng_states(state.rng)  # malformed RNG states are found now, before anything is set
    except (ValueError, KeyError, TypeError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"{file}: not a training state written by modbuild ({exc})") from None
    return optimizer, state


def read(path: Path) -> tuple[dict, dict, TrainState]:
    """Verify every file of a checkpoint, then read (model state, optimizer state, training state): numpy arrays
    from safetensors and values from JSON; nothing is unpickled."""
    _verified(path)
    model_state = _tensors(path / MODEL)
    opt_state, state = _state(path / STATE, _tensors(path / OPTIMIZER))
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
