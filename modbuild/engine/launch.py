"""Run `modbuild train|evaluate` in several processes under ``python -m paddle.distributed.launch``.

The launcher runs script paths only, hence ``run.py``. Its environment, the one-launch-at-a-time lock and the
clean stop (on a timeout, Ctrl-C or SIGTERM) are the TP check's (``modbuild.tp.launch``): the same CPU/gloo traps
apply. The workers start in the caller's working directory, so relative paths mean what they mean to the user.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from modbuild.tp.launch import distributed_launch, log_tails

SCRIPT = Path(__file__).resolve().with_name("run.py")


@dataclass
class Launched:
    returncode: int
    output: str  # the launcher's own output
    logs: str  # the tail of every worker's log


# files in which the launcher dumps the workers' environment (which may hold credentials): not kept in an output dir
ENVIRONMENT_DUMPS = ("envlog.*", "backup_env.*.json", "default.*.log")


def _drop_environment_dumps(log_dir: Path) -> None:
    for pattern in ENVIRONMENT_DUMPS:
        for dump in log_dir.glob(pattern):
            dump.unlink(missing_ok=True)


def launch(
    args: list[str], nproc: int, log_dir: Path, timeout: float | None = None, echo: TextIO | None = None
) -> Launched:
    """``modbuild <args>`` in `nproc` processes from the current directory; each worker's log is appended to
    ``log_dir/workerlog.<rank>`` (the launcher's to ``launcher.log``), rank 0's also copied to `echo` as it grows.
    `timeout`: seconds before everything is stopped (None: no limit)."""
    log_dir = Path(log_dir).resolve()
    try:
        launched = distributed_launch(
            SCRIPT, args, nproc, log_dir, {"OMP_NUM_THREADS": "1"}, timeout, cwd=Path.cwd(), echo=echo
        )
    finally:
        _drop_environment_dumps(log_dir)
    returncode = -1 if launched.returncode is None else launched.returncode  # -1: stopped at the timeout
    logs = log_tails(log_dir)
    if returncode:
        how = f"stopped after {timeout:.0f} s" if launched.returncode is None else f"failed (exit {returncode})"
        others = "\n".join(
            log_tails_of(log_dir / f"workerlog.{rank}") for rank in range(1 if echo is not None else 0, nproc)
        )
        if not list(log_dir.glob("workerlog.*")):  # the launcher itself failed: its own output says why
            others = f"--- launcher ---\n{launched.output[-2000:]}"
        print(f"error: the {nproc}-process run {how}; the logs are in {log_dir}\n{others}".rstrip(), file=sys.stderr)
    return Launched(returncode, launched.output, logs)


def log_tails_of(log: Path, lines: int = 20) -> str:
    if not log.is_file():
        return ""
    text = log.read_text(errors="replace").splitlines()
    return f"--- {log.name} (last {lines} lines) ---\n" + "\n".join(text[-lines:])
