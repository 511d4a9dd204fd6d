"""``python -m modbuild.precision [SIZE ...] [--threads N] [--reps N] [--scratch DIR]``: the precision table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modbuild.precision.run import Settings, run_precision
from modbuild.precision.sizes import DEFAULT_SIZES, SIZES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generated Qwen2 vs HF at real sizes: reports/precision.md")
    parser.add_argument("sizes", nargs="*", default=DEFAULT_SIZES, choices=sorted(SIZES), metavar="SIZE")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the tree (reports/ is written there)")
    parser.add_argument("--threads", type=int, default=Settings.threads)
    parser.add_argument("--reps", type=int, default=Settings.reps, help="timed forward+backward repeats")
    parser.add_argument("--scratch", type=Path, default=None, help="where the checkpoints and tensors go (tmp)")
    args = parser.parse_args(argv)
    ok = run_precision(args.root, args.sizes, Settings(threads=args.threads, reps=args.reps), args.scratch)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
