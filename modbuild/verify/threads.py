"""How many math-library threads a check runs with: the cores that are its own.

Under `doit -n N` every worker is one process among N busy ones. A math library that starts a thread per core
then spins waiting for cores the other workers hold: measured here (2 cores, the other one busy), Paddle's 20
training steps of the `train` check took 8-14 s with two threads and 1 s with one. A check alone in its process
(`doit verify:gemma3:real`, the tests) uses every core.
"""

from __future__ import annotations

import multiprocessing
import os


def check_threads() -> int:
    """One in a `doit -n N` worker (a multiprocessing child: the other workers have the other cores) and in a run
    whose TP pool works beside it (`tp_run.PLAN_ENV`), else the cores this process may run on."""
    from modbuild.verify.tp_run import PLAN_ENV

    if multiprocessing.parent_process() is not None or os.environ.get(PLAN_ENV):
        return 1
    return len(os.sched_getaffinity(0))


def set_math_threads(threads: int) -> None:
    """Paddle's and torch's CPU math threads (paddle has no public API for this in 3.3)."""
    import paddle
    import torch

    paddle.base.core.set_num_threads(threads)
    torch.set_num_threads(threads)
