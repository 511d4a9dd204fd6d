"""CPU-only (gloo) replacements for fleet's model-parallel collectives.

Why: on a CPU build of paddle, tensor parallelism runs over ProcessGroupGloo. Fleet's ``mp_ops`` helpers
(``_mp_allreduce``, ``_c_identity``, ``_c_concat``, ``_c_split``) call ``*_on_calc_stream`` process-group
methods or the ``c_identity`` / ``c_concat`` / ``c_split`` kernels, none of which gloo implements ("does not
support all_reduce with sync_op and use_calc_stream"). Sequence parallelism also fails, in
``sequence_parallel_utils.reduce_scatter`` ("ProcessGroupGLOO does not support reduce_scatter with sync_op"),
which ``AllGatherOp``'s backward, ``ReduceScatterOp`` and ``Column/RowSequenceParallelLinear`` all go through.

What: ``install()`` swaps those five functions for PyLayers built on ``dist.all_reduce`` / ``dist.all_gather``,
which gloo does support, with the same forward/backward semantics:

==================  ===============================  ===============================
function            forward                          backward
==================  ===============================  ===============================
``_c_identity``     identity                         all-reduce (sum)
``_mp_allreduce``   all-reduce (sum)                 identity
``_c_concat``       all-gather, concat on last axis  this rank's slice of last axis
``_c_split``        this rank's slice of last axis   all-gather, concat on last axis
``reduce_scatter``  all-reduce, this rank's slice of axis 0 (a plain function, used in both directions)
==================  ===============================  ===============================

They are patched on ``mp_ops`` / ``sequence_parallel_utils`` and on every already-imported module that bound the
originals by name (``paddle.distributed.collective`` does ``from ...mp_ops import _c_identity``). Fleet's layers
look them up as ``mp_ops._c_identity`` at call time, so later imports see the replacements too.

Scope: only dynamic (eager) mode is replaced; static/PIR graphs still get the original ops. ``install()`` is a
no-op when paddle is compiled with CUDA, so the same program runs unchanged on GPUs over NCCL with fleet's own
fused collectives. It is idempotent and never installed implicitly.
"""

from __future__ import annotations

import sys
from typing import Any

import paddle
from paddle import distributed as dist
from paddle.autograd import PyLayer
from paddle.distributed.fleet.layers.mpu import mp_ops
from paddle.distributed.fleet.utils import sequence_parallel_utils as sp_utils

__all__ = ["install", "installed", "needed", "uninstall"]

_PATCHED_MP_OPS = ("_mp_allreduce", "_c_identity", "_c_concat", "_c_split")
# name -> (home module, original function); filled by install().
_ORIGINALS: dict[str, tuple[Any, Any]] = {}
# (module, attribute name, original) for every binding replaced, so uninstall() can undo exactly those.
_REPLACED: list[tuple[Any, str, Any]] = []


def needed() -> bool:
    """True when paddle has no CUDA, so model-parallel collectives would run over gloo."""
    return not paddle.is_compiled_with_cuda()


def installed() -> bool:
    return bool(_REPLACED)


# --------------------------------------------------------------------------------------------- collectives


def _group(group):
    return dist.collective._get_default_group() if group is None else group


def _all_reduce_sum(x: paddle.Tensor, group) -> paddle.Tensor:
    out = x.clone()  # never reduce the caller's tensor in place
    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group, sync_op=True)
    return out


def _all_gather_concat(x: paddle.Tensor, group, axis: int) -> paddle.Tensor:
    parts: list[paddle.Tensor] = []
    dist.all_gather(parts, x, group=group, sync_op=True)
    return paddle.concat(parts, axis=axis)


def _rank_slice(x: paddle.Tensor, group, axis: int) -> paddle.Tensor:
    size = x.shape[axis]
    if size % group.nranks:
        raise ValueError(f"axis {axis} of size {size} cannot be split evenly over {group.nranks} ranks")
    step = size // group.nranks
    axis = axis % x.ndim
    return paddle.slice(x, axes=[axis], starts=[step * group.rank], ends=[step * (group.rank + 1)]).clone()


class _IdentityAllReduceGrad(PyLayer):
    """``_c_identity``: identity forward, sum the gradient over the group backward."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.clone()

    @staticmethod
    def backward(ctx, dy):
        return _all_reduce_sum(dy, ctx.group)


class _AllReduceIdentityGrad(PyLayer):
    """``_mp_allreduce``: sum over the group forward, identity backward."""

    @staticmethod
    def forward(ctx, x, group):
        return _all_reduce_sum(x, group)

    @staticmethod
    def backward(ctx, dy):
        return dy


class _ConcatLastAxis(PyLayer):
    """``_c_concat``: gather every rank's shard along the last axis; backward keeps this rank's slice."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _all_gather_concat(x, group, axis=-1)

    @staticmethod
    def backward(ctx, dy):
        return _rank_slice(dy, ctx.group, axis=-1)


class _SplitLastAxis(PyLayer):
    """``_c_split``: keep this rank's slice of the last axis; backward gathers the slices back."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _rank_slice(x, group, axis=-1)

    @staticmethod
    def backward(ctx, dy):
        return _all_gather_concat(dy, ctx.group, axis=-1)


def _member(group) -> bool:
    return group is None or group.is_member()


def gloo_c_identity(tensor, group=None, skip_c_identity_dynamic=False):
    if not paddle.in_dynamic_mode():
        return _ORIGINALS["_c_identity"][1](tensor, group=group, skip_c_identity_dynamic=skip_c_identity_dynamic)
    if not _member(group):
        return None
    return _IdentityAllReduceGrad.apply(tensor, _group(group))


def gloo_mp_allreduce(
    tensor,
    op=dist.ReduceOp.SUM,
    group=None,
    use_calc_stream=True,
    use_model_parallel=True,
    skip_c_identity_dynamic=False,
):
    if not paddle.in_dynamic_mode():
        return _ORIGINALS["_mp_allreduce"][1](
            tensor, op, group, use_calc_stream, use_model_parallel, skip_c_identity_dynamic
        )
    if not _member(group):
        return None
    if op != dist.ReduceOp.SUM:
        raise ValueError(f"_mp_allreduce supports only ReduceOp.SUM, got {op}")
    return _AllReduceIdentityGrad.apply(tensor, _group(group))


def gloo_c_concat(tensor, group=None):
    if not paddle.in_dynamic_mode():
        return _ORIGINALS["_c_concat"][1](tensor, group=group)
    if not _member(group):
        return None
    return _ConcatLastAxis.apply(tensor, _group(group))


def gloo_c_split(tensor, group=None):
    if not paddle.in_dynamic_mode():
        return _ORIGINALS["_c_split"][1](tensor, group=group)
    if not _member(group):
        return None
    return _SplitLastAxis.apply(tensor, _group(group))


def gloo_reduce_scatter(input):
    """Sum ``input`` over the model-parallel group and keep this rank's slice of axis 0.

    Replaces ``sequence_parallel_utils.reduce_scatter``; it moves nranks times the data of a true reduce-scatter,
    which is irrelevant for CPU tests. Called inside fleet's PyLayers, so it need not be differentiable.
    """
    group = paddle.distributed.fleet.get_hybrid_communicate_group().get_model_parallel_group()
    return _rank_slice(_all_reduce_sum(input, group), group, axis=0)


_REPLACEMENTS = {
    "_mp_allreduce": gloo_mp_allreduce,
    "_c_identity": gloo_c_identity,
    "_c_concat": gloo_c_concat,
    "_c_split": gloo_c_split,
}


# ------------------------------------------------------------------------------------------ install / undo


def install(force: bool = False) -> bool:
    """Patch the collectives for gloo; returns whether the shim is active.

    A no-op (returning False) on CUDA builds unless ``force``. Safe to call any number of times.
    """
    if installed():
        return True
    if not (force or needed()):
        return False
    replacements = {name: (mp_ops, fn) for name, fn in _REPLACEMENTS.items()}
    replacements["reduce_scatter"] = (sp_utils, gloo_reduce_scatter)
    for name, (home, fn) in replacements.items():
        _ORIGINALS[name] = (home, getattr(home, name))
    by_identity = {id(orig): (name, replacements[name][1]) for name, (_, orig) in _ORIGINALS.items()}
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            hit = by_identity.get(id(value))
            if hit is not None and value is _ORIGINALS[hit[0]][1]:
                _REPLACED.append((module, attr, value))
                setattr(module, attr, hit[1])
    return True


def uninstall() -> None:
    """Restore every binding ``install`` replaced."""
    while _REPLACED:
        module, attr, original = _REPLACED.pop()
        setattr(module, attr, original)
    _ORIGINALS.clear()
