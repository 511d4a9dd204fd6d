"""Fleet set-up from the config's ``Distributed`` section, under ``python -m paddle.distributed.launch``.

One process: nothing to initialise. Several: ``fleet.init`` with a hybrid strategy of ``dp_degree x mp_degree``;
on a CPU build the project's gloo collective shim (``modbuild.tp.gloo_shim``) first replaces the model-parallel
collectives gloo lacks.
"""

from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import paddle

from modbuild.engine.config import ConfigError, DistributedSection


@dataclass(frozen=True)
class DistInfo:
    world: int = 1
    rank: int = 0
    dp_degree: int = 1
    dp_rank: int = 0
    mp_degree: int = 1
    mp_rank: int = 0
    mp_group: Any = None
    dp_group: Any = None

    @property
    def distributed(self) -> bool:
        return self.world > 1


def seed_all(seed: int) -> None:
    """``Global.seed`` for Paddle, NumPy and Python's ``random``: a hook drawing from any of them is reproducible."""
    paddle.seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def init(section: DistributedSection, seed: int) -> DistInfo:
    """Initialise fleet once per process for these degrees (a second call with the same ones is free), and seed
    every RNG (on every call: each engine starts from the seed)."""
    info = _init(section.dp_degree, section.mp_degree, seed)
    seed_all(seed)
    return info


@functools.cache
def _init(dp_degree: int, mp_degree: int, seed: int) -> DistInfo:
    world = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
    if dp_degree * mp_degree != world:
        how = (
            "run it with `modbuild train CONFIG`, which starts paddle.distributed.launch itself"
            if world == 1
            else "set Distributed.dp_degree x Distributed.mp_degree to the number of processes"
        )
        raise ConfigError(
            f"Distributed: dp_degree {dp_degree} x mp_degree {mp_degree} = {dp_degree * mp_degree} processes, "
            f"but {world} running; {how}"
        )
    paddle.seed(seed)
    if world == 1:
        return DistInfo()
    from paddle.distributed import fleet
    from paddle.distributed.fleet.meta_parallel import get_rng_state_tracker

    from modbuild.tp import gloo_shim

    gloo_shim.install()  # a no-op on CUDA builds
    strategy = fleet.DistributedStrategy()
    strategy.hybrid_configs = {"dp_degree": dp_degree, "mp_degree": mp_degree, "pp_degree": 1, "sharding_degree": 1}
    fleet.init(is_collective=True, strategy=strategy)
    hcg = fleet.get_hybrid_communicate_group()
    mp_rank = hcg.get_model_parallel_rank()
    tracker = get_rng_state_tracker()
    if "model_parallel_rng" not in tracker.states_:  # the TP layers draw their (unused) init from it
        tracker.add("model_parallel_rng", seed + 1 + mp_rank)
    paddle.seed(seed)
    return DistInfo(
        world=world,
        rank=paddle.distributed.get_rank(),
        dp_degree=dp_degree,
        dp_rank=hcg.get_data_parallel_rank(),
        mp_degree=mp_degree,
        mp_rank=mp_rank,
        mp_group=hcg.get_model_parallel_group(),
        dp_group=hcg.get_data_parallel_group(),
    )


def wrap(
    model: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer, info: DistInfo
) -> tuple[paddle.nn.Layer, paddle.optimizer.Optimizer]:
    """Fleet's wrappers when several processes run: DataParallel / TensorParallel and the hybrid-parallel
    optimizer (whose global-norm clip sums over the model-parallel group)."""
    if not info.distributed:
        return model, optimizer
    from paddle.distributed import fleet

    if info.mp_degree > 1 and not paddle.is_compiled_with_cuda():
        # fleet's TensorParallel wrapper broadcasts each batch before forward, which asserts "Only support xpu, gpu
        # and custom_device" on CPU. Every rank reads the same batch (TP ranks share a data-parallel rank) and
        # starts from the same full weights (`build._tensor_parallel`), so the bare TP model is what it would run.
        return model, fleet.distributed_optimizer(optimizer)
    return fleet.distributed_model(model), fleet.distributed_optimizer(optimizer)


def mean_over_dp(value: float, info: DistInfo) -> float:
    """The mean of a per-rank scalar over the data-parallel group (the loss of the global batch)."""
    if info.dp_degree == 1:
        return value
    total = paddle.to_tensor([value], dtype="float64")
    paddle.distributed.all_reduce(total, group=info.dp_group)
    return float(total.numpy()[0]) / info.dp_degree


def barrier(info: DistInfo) -> None:
    if info.distributed:
        paddle.distributed.barrier()
