"""Run `modbuild train|evaluate` in several processes under ``python -m paddle.distributed.launch``.

The launcher runs script paths only, hence ``run.py``. Its environment, the one-launch-at-a-time lock and the
clean stop on timeout are the TP check's (``modbuild.tp.launch``): the same CPU/gloo traps apply.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from modbuild.tp.launch import ROOT, launch_env, log_tails, one_launch_at_a_time, stop_launch

SCRIPT = Path(__file__).resolve().with_name("run.py")


@dataclass
class Launched:
    returncode: int
    output: str  # the launcher's own output
    logs: str  # the tail of every worker's log


def launch(args: list[str], nproc: int, timeout: float = 600, log_dir: Path | None = None) -> Launched:
    """``modbuild <args>`` in `nproc` processes; the workers' logs go to `log_dir` (default: a temporary one)."""
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="engine_launch_"))
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc)]
    cmd += ["--log_dir", str(log_dir), str(SCRIPT), *args]
    with one_launch_at_a_time():
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=launch_env({"OMP_NUM_THREADS": "1"}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_launch(proc)
            output, _ = proc.communicate()
    logs = log_tails(log_dir)
    if proc.returncode:
        print(f"{' '.join(cmd)} failed (exit {proc.returncode})\n{output[-3000:]}\n{logs}", file=sys.stderr)
    return Launched(proc.returncode, output, logs)
