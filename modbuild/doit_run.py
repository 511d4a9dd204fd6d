"""`doit` / `doit run` for a modbuild tree: one run at a time, and Ctrl-C or SIGTERM stops it cleanly.

Registered for this tree in pyproject.toml (`[tool.doit.plugins.command]`), so only the command that runs
tasks takes the lock and the signal handlers; `doit list`, `doit info` and `doit graph` do neither.

On an interrupt doit still saves its dep DB (the tasks that finished stay done; the one cut short reruns
next time, and its files were each replaced atomically or not at all); this command then prints one line
instead of a traceback and exits 128 + the signal number, as a shell does (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from doit.cmd_run import Run as DoitRun

from modbuild.lock import hold_project_lock

INTERRUPTED = "interrupted: stopped cleanly, the tree is consistent (finished models are saved; `doit` redoes the rest)"

_received: list[int] = []  # the signal that stopped the run


def stop(signum, frame):
    # doit saves its dep DB on KeyboardInterrupt but not when killed by SIGTERM. Further signals are
    # ignored, so that they cannot cut short that save (the JSON DB is truncated, then rewritten).
    _received.append(signum)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


class Run(DoitRun):
    def execute(self, params, args):
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        load_config = self.loader.load_doit_config

        def load_config_and_lock() -> dict:
            # After dodo.py is loaded (doit is in its directory) and before the dep DB is read.
            config = load_config()
            hold_project_lock(Path(config.get("dep_file") or params["dep_file"]).resolve().parent)
            return config

        self.loader.load_doit_config = load_config_and_lock
        try:
            return super().execute(params, args)
        except KeyboardInterrupt:  # doit's runner has saved the dep DB and reported by now (its `finally`)
            signum = _received[-1] if _received else signal.SIGINT
            print(INTERRUPTED, file=sys.stderr, flush=True)
            return 128 + signum
