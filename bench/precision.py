"""Wall time and peak memory of the real-size precision table: `run_precision` at Qwen2-0.5B and 1.5B.

    python bench/precision.py [SIZE ...]

Writes reports/precision.md and .json like `python -m modbuild.precision`, then prints the total wall time
against the 15-minute goal and each framework process's peak RSS against the machine's memory."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modbuild.precision import DEFAULT_SIZES, SIZES, run_precision

GOAL_S = 15 * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", default=DEFAULT_SIZES, choices=sorted(SIZES), metavar="SIZE")
    args = parser.parse_args()
    start = time.perf_counter()
    ok = run_precision(ROOT, args.sizes)
    wall = time.perf_counter() - start
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    report = json.loads((ROOT / "reports" / "precision.json").read_text())
    print(f"precision {' '.join(args.sizes)}: {wall:.0f} s wall (goal <= {GOAL_S} s), {'ok' if ok else 'FAILED'}")
    for row in report["rows"]:
        for side, info in row.get("frameworks", {}).items():
            print(f"  {row['label']} {side}: peak RSS {info['rss']['peak_gib']:.1f} GiB of {memory:.0f} GiB")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
