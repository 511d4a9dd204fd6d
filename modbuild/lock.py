"""One doit run per tree at a time: the JSON dep DB is rewritten whole at the end of a run."""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

_held: list[int] = []


def hold_project_lock(root: Path) -> None:
    """Take an exclusive lock on `root/.modbuild.lock` for this process's lifetime, waiting if needed."""
    if _held:
        return
    fd = os.open(root / ".modbuild.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another doit run holds {root / '.modbuild.lock'}; waiting for it to finish...", file=sys.stderr)
        fcntl.flock(fd, fcntl.LOCK_EX)
    _held.append(fd)
