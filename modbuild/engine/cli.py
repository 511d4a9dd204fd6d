"""`modbuild train CONFIG.yaml [-o Section.key=value ...]` and `modbuild evaluate CONFIG.yaml`.

A config whose ``Distributed`` degrees ask for more than one process is re-run under
``python -m paddle.distributed.launch`` (``modbuild.engine.launch``); each process then initialises fleet.
SIGTERM becomes KeyboardInterrupt, so a save in progress removes its temporary directory on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config needs pydantic, which a core install (pre-commit's) lacks; imported when run
    from modbuild.engine.config import Config


def add_commands(sub: argparse._SubParsersAction) -> None:
    for name, text in (
        ("train", "train with the engine (resumes from save_load.ckpt_dir)"),
        ("evaluate", "evaluate a checkpoint"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("config", metavar="CONFIG.yaml")
        cmd.add_argument(
            "-o",
            "--override",
            action="append",
            default=[],
            metavar="Section.key=value",
            help="override a config key (YAML value)",
        )


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _needs_launch(config: Config) -> bool:
    return config.Distributed.dp_degree * config.Distributed.mp_degree > 1 and "PADDLE_TRAINERS_NUM" not in os.environ


def run(command: str, config_path: str, overrides: list[str]) -> int:
    """Entry for both commands; returns the exit status. Errors print one clear message, no traceback."""
    from modbuild.engine.checkpoint import CheckpointError
    from modbuild.engine.config import ConfigError, load
    from modbuild.engine.data import DataError

    try:
        config = load(config_path, overrides)
        if _needs_launch(config):
            from modbuild.engine.launch import launch

            nproc = config.Distributed.dp_degree * config.Distributed.mp_degree
            return launch([command, config_path, *[a for o in overrides for a in ("-o", o)]], nproc).returncode
        return _train(config) if command == "train" else _evaluate(config)
    except (ConfigError, CheckpointError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc}); the last complete checkpoint is kept", file=sys.stderr)
        return 130


def _engine(config: Config):
    from modbuild.engine.engine import EagerEngine
    from modbuild.engine.module import CausalLMModule

    engine = EagerEngine(CausalLMModule(config), config)
    # after paddle's import, which installs a SIGTERM handler of its own (that dies without unwinding)
    signal.signal(signal.SIGTERM, _sigterm)
    return engine


def _train(config: Config) -> int:
    engine = _engine(config)
    losses = engine.fit()
    if engine.dist.rank == 0 and losses:
        print(json.dumps({"steps": engine.state.step, "first_loss": losses[0], "last_loss": losses[-1]}))
    return 0


def _evaluate(config: Config) -> int:
    engine = _engine(config)
    if config.Engine.save_load.ckpt_dir:
        engine.load(config.Engine.save_load.ckpt_dir)
    loss = engine.evaluate(0)
    if engine.dist.rank == 0:
        print(json.dumps({"step": engine.state.step, "eval_loss": loss}))
    return 0
