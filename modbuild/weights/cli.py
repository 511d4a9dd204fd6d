"""``python -m modbuild.weights {hf2paddle,paddle2hf,split} --src DIR --dst DIR [--model M] [--naming N] [--tp N]``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from modbuild.quiet import quiet_imports
from modbuild.weights.convert import convert_hf_to_paddle, convert_paddle_to_hf
from modbuild.weights.hf import WeightsError
from modbuild.weights.naming import NAMINGS
from modbuild.weights.split import split_tensor_parallel

DST_HELP = """\
--dst and what it holds: a new or empty directory is filled. A directory holding
a checkpoint this tool wrote (its files are listed in .modbuild-weights.json) is
updated: the files listed there and those this conversion writes are replaced or
removed, anything else in it is kept. Any other non-empty directory is refused
unless --force; with --force, only the files this conversion writes are replaced
(same names), anything else is kept. --dst may not be --src, lie inside it or
contain it. No file in --dst is touched until the whole checkpoint is written
(into a hidden temporary directory beside or inside it); the files are then
renamed into place one by one. A run interrupted in that moment leaves whole
files and a manifest marking the checkpoint incomplete (refused as a --src);
running the command again repairs it.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modbuild.weights", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {
        "hf2paddle": "HF safetensors checkpoint -> Paddle checkpoint",
        "paddle2hf": "Paddle checkpoint -> HF safetensors checkpoint",
        "split": "full Paddle checkpoint -> per-rank tensor-parallel files",
    }
    for name, help_text in helps.items():
        command = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=DST_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_argument("--src", required=True, help="input checkpoint directory")
        command.add_argument(
            "--dst",
            required=True,
            help="output directory; an existing one keeps every file that is not a checkpoint's",
        )
        command.add_argument(
            "--force",
            action="store_true",
            help="write into a non-empty --dst this tool did not write (only same-named files are replaced)",
        )
        command.add_argument("--model", help="generated model name (default: config.json model_type)")
        command.add_argument("--no-progress", action="store_true", help="no per-shard progress bars")
        if name != "split":
            command.add_argument(
                "--naming",
                choices=NAMINGS,
                default="hf",
                help="the Paddle side's parameter names: the generated model's (HF's) or PaddleNLP's hand-written model's",
            )
        if name == "split":
            command.add_argument("--tp", type=int, required=True, help="tensor-parallel degree")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_imports()  # before paddle's import: its ccache and distutils warnings
    args.no_progress = args.no_progress or not sys.stderr.isatty()  # no bars in a pipe or a log
    # The converter logs every checkpoint key it skips, and why: shown on stderr, once (not propagated to the
    # root logger, which paddle's import gives a handler of its own).
    handler = logging.StreamHandler(sys.stderr)
    logger = logging.getLogger("modbuild.weights")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    propagate, logger.propagate = logger.propagate, False
    try:
        return _run(args)
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _run(args: argparse.Namespace) -> int:
    progress = not args.no_progress
    try:
        if args.command == "hf2paddle":
            out = convert_hf_to_paddle(args.src, args.dst, args.model, progress, args.naming, args.force)
        elif args.command == "paddle2hf":
            out = convert_paddle_to_hf(args.src, args.dst, args.model, progress, args.naming, args.force)
        else:
            out = split_tensor_parallel(args.src, args.dst, args.tp, args.model, progress, args.force)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0
