"""Wall time of the whole precision suite: `doit -n N verify` for every model, from scratch.

    python bench/verify.py [-n 2] [--without bert,gptj]

Prints the wall time against the 5-minute goal and which checks failed. The dep DB entries of the
verify tasks are forgotten first so every check runs. `--without` leaves some models' checks out (their
subtasks are not named), which measures what those models add: run it with and without.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2, help="doit workers")
    parser.add_argument("--without", default="", help="comma-separated models whose checks are left out")
    args = parser.parse_args()
    subprocess.run(["doit", "convert"], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["doit", "forget", "verify"], cwd=ROOT, check=True, capture_output=True)
    tasks = ["verify"]
    if args.without:
        left_out = set(args.without.split(","))
        listed = subprocess.run(["doit", "list", "--all", "-q"], cwd=ROOT, check=True, capture_output=True, text=True)
        names = [line.split()[0] for line in listed.stdout.splitlines() if line.startswith("verify:")]
        tasks = [name for name in names if name.split(":")[1] not in left_out]
    start = time.perf_counter()
    done = subprocess.run(["doit", "-n", str(args.n), *tasks], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if re.match(r"\[\d+/\d+\] verify ", line)]
    report = json.loads((ROOT / "reports" / "verify.json").read_text())
    checks = [r for r in report["records"] if r.get("applicable", True)]
    failed = [f"{r['model']}:{r['check']}" for r in checks if not r["passed"]]
    print(
        f"doit -n {args.n} verify{' without ' + args.without if args.without else ''}: {wall:.1f} s wall "
        f"(goal <= 300 s), {len(lines)} checks run, exit {done.returncode}"
    )
    print(f"applicable checks: {len(checks)}, failed: {failed or 'none'}")
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
