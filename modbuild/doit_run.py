"""`doit` / `doit run` for a modbuild tree: one run at a time, and SIGTERM stops it cleanly.

Registered for this tree in pyproject.toml (`[tool.doit.plugins.command]`), so only the command that runs
tasks takes the lock and the signal handler; `doit list`, `doit info` and `doit graph` do neither.
"""

from __future__ import annotations

import signal
from pathlib import Path

from doit.cmd_run import Run as DoitRun

from modbuild.lock import hold_project_lock


def stop(signum, frame):
    # doit saves its dep DB on KeyboardInterrupt but not when killed by SIGTERM. A second SIGTERM is
    # ignored, so that it cannot cut short that save (the JSON DB is truncated, then rewritten).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


class Run(DoitRun):
    def execute(self, params, args):
        signal.signal(signal.SIGTERM, stop)
        load_config = self.loader.load_doit_config

        def load_config_and_lock() -> dict:
            # After dodo.py is loaded (doit is in its directory) and before the dep DB is read.
            config = load_config()
            hold_project_lock(Path(config.get("dep_file") or params["dep_file"]).resolve().parent)
            return config

        self.loader.load_doit_config = load_config_and_lock
        return super().execute(params, args)
