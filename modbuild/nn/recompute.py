"""Activation recomputation at the granularity ``config.recompute_granularity`` names."""

from __future__ import annotations

from collections.abc import Callable

from paddle import nn
from paddle.distributed.fleet.utils import recompute

# The decoder layer, the attention block, the attention function.
RECOMPUTE_GRANULARITIES = ("full", "full_attn", "core_attn")


def maybe_recompute(module: nn.Layer, granularity: str, function: Callable, *args, **kwargs):
    """Call ``function``; under ``config.recompute`` at this granularity, recompute it in backward instead."""
    config = module.config
    if not (config.recompute and module.training and config.recompute_granularity == granularity):
        return function(*args, **kwargs)
    # Always non-reentrant: paddle 3.3's reentrant recompute rejects keyword arguments and fails in backward on
    # the tuple/None arguments and outputs these layers use.
    return recompute(function, *args, use_reentrant=False, **kwargs)
