"""Wall time of the whole precision suite: `doit -n N verify` for every model, from scratch.

    python bench/verify.py [-n 2] [--without bert,gptj]

Prints the wall time against the 5-minute goal, the wall time per check run (goal <= 1.2 s), which checks
failed, and per check kind the time split into imports, HF side, Paddle side and TP launch/IPC
(`modbuild/verify/profile.py` samples each check; the sums are time inside checks, across both workers). The dep DB entries of the
verify tasks are forgotten first so every check runs. `--without` leaves some models' checks out (their
subtasks are not named), which measures what those models add: run it with and without.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


KINDS = ("imports", "hf", "paddle", "launch", "other")


def print_split(profiles: Path) -> None:
    """Per check kind: how many ran, their summed time, and its split (seconds; `launch` is TP launch/IPC)."""
    by_kind: dict[str, list[dict]] = {}
    for path in sorted(profiles.glob("*.json")):
        by_kind.setdefault(path.stem.split(".", 1)[1], []).append(json.loads(path.read_text()))
    print(f"{'check':<10} {'runs':>4} {'total':>7} {'mean':>6} " + " ".join(f"{k:>8}" for k in KINDS))
    for kind, splits in sorted(by_kind.items()):
        total = sum(s["total"] for s in splits)
        parts = " ".join(f"{sum(s[k] for s in splits):8.1f}" for k in KINDS)
        print(f"{kind:<10} {len(splits):>4} {total:7.1f} {total / len(splits):6.2f} {parts}")


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
    profiles = Path(tempfile.mkdtemp(prefix="bench_verify_"))
    env = {**os.environ, "MODBUILD_PROFILE_DIR": str(profiles)}
    start = time.perf_counter()
    done = subprocess.run(
        ["doit", "-n", str(args.n), *tasks], check=False, cwd=ROOT, capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if re.match(r"\[\d+/\d+\] verify ", line)]
    ran = len(list(profiles.glob("*.json"))) or len(lines)  # every check that ran writes its profile
    report = json.loads((ROOT / "reports" / "verify.json").read_text())
    checks = [r for r in report["records"] if r.get("applicable", True)]
    failed = [f"{r['model']}:{r['check']}" for r in checks if not r["passed"]]
    print(
        f"doit -n {args.n} verify{' without ' + args.without if args.without else ''}: {wall:.1f} s wall "
        f"(goal <= 300 s), {ran} checks run, exit {done.returncode}"
    )
    print(f"per check run: {wall / max(1, ran):.2f} s wall (goal <= 1.2 s)")
    print(f"applicable checks: {len(checks)}, failed: {failed or 'none'}")
    print_split(profiles)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
