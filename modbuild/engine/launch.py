"""Run `modbuild train|evaluate` in several processes under ``python -m paddle.distributed.launch``.

The launcher runs script paths only, hence ``run.py``. Its environment, the one-launch-at-a-time lock and the
clean stop on timeout are the TP check's (``modbuild.tp.launch``): the same CPU/gloo traps apply.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from modbuild.tp.launch import distributed_launch, log_tails

SCRIPT = Path(__file__).resolve().with_name("run.py")


@dataclass
class Launched:
    returncode: int
    output: str  # the launcher's own output
    logs: str  # the tail of every worker's log


def launch(args: list[str], nproc: int, timeout: float = 600, log_dir: Path | None = None) -> Launched:
    """``modbuild <args>`` in `nproc` processes; the workers' logs go to `log_dir` (default: a temporary one)."""
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="engine_launch_"))
    launched = distributed_launch(SCRIPT, args, nproc, log_dir, {"OMP_NUM_THREADS": "1"}, timeout)
    returncode = -1 if launched.returncode is None else launched.returncode  # -1: stopped at the timeout
    logs = log_tails(log_dir)
    if returncode:
        print(
            f"{' '.join(launched.cmd)} failed (exit {returncode})\n{launched.output[-3000:]}\n{logs}", file=sys.stderr
        )
    return Launched(returncode, launched.output, logs)
