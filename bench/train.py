"""What the train checks add to `doit -n N verify`: the suite timed without them, then with them, from scratch.

    python bench/train.py [-n 2]

Both runs start from a forgotten verify DB, so every check runs. The first runs every verify subtask except
`train` and `train-tp2` (named on doit's command line), the second the whole `verify` group. Prints both wall times
and their difference against the issue's ~90 s budget. The machine should otherwise be idle: two cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 90.0


def verify_subtasks() -> list[str]:
    out = subprocess.run(["doit", "list", "--all", "verify"], cwd=ROOT, check=True, capture_output=True, text=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.startswith("verify:")]


def timed(n: int, tasks: list[str], env: dict | None = None) -> tuple[float, int]:
    subprocess.run(["doit", "forget", "verify"], cwd=ROOT, check=True, capture_output=True)
    start = time.perf_counter()
    done = subprocess.run(
        ["doit", "-n", str(n), *tasks], check=False, cwd=ROOT, capture_output=True, text=True, env=env
    )
    return time.perf_counter() - start, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2, help="doit workers")
    args = parser.parse_args()
    # converted models and the real checkpoint first: neither run should pay for them
    subprocess.run(["doit", "convert", "weights"], cwd=ROOT, check=True, capture_output=True)
    others = [t for t in verify_subtasks() if not t.endswith((":train", ":train-tp2"))]
    # without the train checks, each tp2 check launches alone (no train-tp2 work done for a later run)
    without, rc_without = timed(args.n, others, {**os.environ, "MODBUILD_TP_SHARED": "0"})
    with_train, rc_with = timed(args.n, ["verify"])
    added = with_train - without
    print(f"doit -n {args.n}: {len(others)} checks without train: {without:.1f} s (exit {rc_without})")
    print(f"doit -n {args.n} verify, with train and train-tp2: {with_train:.1f} s (exit {rc_with})")
    print(f"added by the train checks: {added:.1f} s (budget ~{BUDGET:.0f} s)")
    sys.exit(rc_without or rc_with)


if __name__ == "__main__":
    main()
