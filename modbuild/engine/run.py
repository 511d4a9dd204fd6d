"""Script form of `modbuild train|evaluate` for ``paddle.distributed.launch`` (which runs paths, not modules)."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Run by path, sys.path[0] is modbuild/engine, whose config.py / data.py would shadow other packages' imports.
    sys.path.pop(0)

from modbuild.engine.cli import run

if __name__ == "__main__":
    status = run(sys.argv[1], sys.argv[2], [a for i, a in enumerate(sys.argv[3:]) if i % 2])
    sys.stdout.flush()
    sys.stderr.flush()
    # as the TP worker: skip teardown, where gloo's destructors were seen to abort (SIGABRT) after the work was done
    os._exit(status)
