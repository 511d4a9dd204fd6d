"""Checkpoints of a tensor-parallel run hold the full, unsplit tensors, so they load at any TP degree.

On save every model-parallel rank gathers each split parameter (and the optimizer moments shaped like it) along
its split axis (the one axis where its shape differs from the single-process model's); rank 0 writes. On load
each rank takes its slice with the model's own TP mappings (``get_tensor_parallel_convert_actions``), the same
actions that split the initial weights (``build._tensor_parallel``). Scalars such as Adam's beta powers are
replicated and pass through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import paddle
from paddle import distributed as dist
from paddlenlp.transformers.conversion_utils import naive_fuse_merge_tp

from modbuild.nn.parallel import merge_fused, split_fused


@dataclass(frozen=True)
class TPLayout:
    full_shapes: dict[str, list[int]]  # structured parameter name -> the single-process shape
    actions: dict[str, Any]  # structured name -> full array -> this rank's slice (split parameters only)
    group: Any  # the model-parallel group

    def axis(self, name: str, local_shape: list[int]) -> int | None:
        diff = [i for i, (a, b) in enumerate(zip(local_shape, self.full_shapes[name])) if a != b]
        return diff[0] if diff else None


def _param_of(key: str, names: list[str]) -> str | None:
    """The parameter an optimizer-state key belongs to (``<param>_moment1_0``), longest name first."""
    for name in names:
        if key == name or key.startswith(name + "_"):
            return name
    return None


def merge_parts(parts: list[np.ndarray], axis: int, action: Any = None) -> np.ndarray:
    """The full array from every rank's part: concatenated along the split axis, except for a fused projection
    whose parts were split each on its own (``colwise_fused2``/``3``: GLM's gate_up_proj), where each rank's part
    holds a slice of every fused part (paddlenlp's naive-fuse merge puts them back)."""
    keywords = getattr(action, "keywords", {})
    if getattr(action, "func", None) is split_fused:  # unequal parts (colwise_qkv: Phi-3's GQA qkv_proj)
        return merge_fused(parts, keywords["sections"])
    fused = 2 if keywords.get("is_naive_2fuse") else 3 if keywords.get("is_naive_3fuse") else 0
    if fused:
        return naive_fuse_merge_tp(parts, is_column=keywords.get("is_column", True), fuse_tensor_parts=fused)
    return np.concatenate(parts, axis=axis)


def _gather(value: paddle.Tensor, axis: int, group, action: Any = None) -> np.ndarray:
    parts: list[paddle.Tensor] = []
    dist.all_gather(parts, value, group=group)
    return merge_parts([p.numpy() for p in parts], axis, action)


def gather(model_state: dict, opt_state: dict, layout: TPLayout) -> tuple[dict, dict]:
    """Full-shape numpy copies of this rank's states (collective: every model-parallel rank must call it)."""
    names = sorted(layout.full_shapes, key=len, reverse=True)
    local_shapes = {n: list(t.shape) for n, t in model_state.items()}
    full_model = {}
    for name, tensor in model_state.items():
        axis = layout.axis(name, list(tensor.shape))
        full_model[name] = (
            tensor.numpy() if axis is None else _gather(tensor, axis, layout.group, layout.actions.get(name))
        )
    full_opt = {}
    for key, value in opt_state.items():
        param = _param_of(key, names) if isinstance(value, paddle.Tensor) else None
        axis = layout.axis(param, local_shapes[param]) if param in local_shapes else None
        if axis is not None and list(value.shape) == local_shapes[param]:
            full_opt[key] = _gather(value, axis, layout.group, layout.actions.get(param))
        else:
            full_opt[key] = value.numpy() if isinstance(value, paddle.Tensor) else value
    return full_model, full_opt


def split(model_state: dict, opt_state: dict, layout: TPLayout) -> tuple[dict, dict]:
    """This rank's slices of full-shape states (no communication)."""
    names = sorted(layout.full_shapes, key=len, reverse=True)
    local_model = {n: layout.actions[n](np.asarray(v)) if n in layout.actions else v for n, v in model_state.items()}
    local_opt = {}
    for key, value in opt_state.items():
        param = _param_of(key, names) if isinstance(value, np.ndarray | paddle.Tensor) else None
        full = layout.full_shapes.get(param)
        if param in layout.actions and list(np.shape(value)) == full:
            local_opt[key] = layout.actions[param](np.asarray(value))
        else:
            local_opt[key] = value
    return local_model, local_opt
