"""`modbuild train CONFIG.yaml [-o Section.key=value ...]` and `modbuild evaluate CONFIG.yaml`.

Everything that can be checked before work starts is: the config (schema, ``Model.config`` against the model's
config class, the degrees against the model), an ``evaluate`` without a checkpoint, an ``output_dir`` holding an
earlier run (``modbuild.engine.output``). A config whose ``Distributed`` degrees ask for more than one process is
then re-run under ``python -m paddle.distributed.launch`` (``modbuild.engine.launch``) from the user's directory,
rank 0's output shown here and every rank's log kept in ``output_dir/logs``; Ctrl-C or SIGTERM stops all of it.
SIGTERM becomes KeyboardInterrupt, so a save in progress removes its temporary directory on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config needs pydantic, which a core install (pre-commit's) lacks; imported when run
    from modbuild.engine.config import Config

CONFIG_HELP = "the engine's YAML config (sections Global, Engine, Model, Data, Optimizer, Distributed; see configs/)"


def add_commands(sub: argparse._SubParsersAction) -> None:
    for name, text in (
        ("train", "train a generated model with the engine (CONFIG.yaml: see configs/tiny_qwen2.yaml)"),
        ("evaluate", "evaluate a checkpoint (Engine.save_load.ckpt_dir) or converted weights (Model.init_from)"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("config", metavar="CONFIG.yaml", help=CONFIG_HELP)
        cmd.add_argument(
            "-o",
            "--override",
            action="append",
            default=[],
            metavar="Section.key=value",
            help="override a config key (YAML value), e.g. -o Engine.max_steps=100",
        )


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _inside_launch() -> bool:
    return "PADDLE_TRAINERS_NUM" in os.environ


def _nproc(config: Config) -> int:
    return config.Distributed.dp_degree * config.Distributed.mp_degree


def run(command: str, config_path: str, overrides: list[str]) -> int:
    """Entry for both commands; returns the exit status. Errors print one clear message, no traceback."""
    from modbuild.quiet import quiet_imports

    quiet_imports()  # before paddle's import: its ccache and distutils warnings
    from modbuild.engine.checkpoint import CheckpointError
    from modbuild.engine.config import ConfigError, load
    from modbuild.engine.data import DataError

    try:
        config = load(config_path, overrides)
        config.Engine.progress_bar &= sys.stderr.isatty()  # in a pipe or a log: per-step lines, no bar
        if command == "evaluate" and not config.Engine.save_load.ckpt_dir and not config.Model.init_from:
            raise config.error(
                "Engine.save_load.ckpt_dir: not set, and `modbuild evaluate` evaluates a trained model, never a "
                "randomly initialised one: set -o Engine.save_load.ckpt_dir=DIR (a step_* checkpoint, or an "
                "output_dir: its newest), or Model.init_from (converted weights)"
            )
        if _inside_launch():  # a worker: the launching process checked the rest
            return _train(config) if command == "train" else _evaluate(config)
        _preflight(command, config)
        signal.signal(signal.SIGTERM, _sigterm)  # after paddle's import, which installs a handler that does not unwind
        if _nproc(config) > 1:
            return _launch(command, config_path, overrides, config)
        return _train(config) if command == "train" else _evaluate(config)
    except (ConfigError, CheckpointError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc}); the last complete checkpoint is kept", file=sys.stderr)
        return 130


def _preflight(command: str, config: Config) -> None:
    """Before any process starts or any file is written: the model config, the degrees, the data, the output dir."""
    from modbuild.engine import data, output
    from modbuild.engine.build import model_config

    _, model = model_config(config)
    if _nproc(config) > 1:  # a too-short text is found here, not in every worker after fleet's start-up
        _check_devices(config)
        train_rows, _ = data.windows(config.Data, int(model.vocab_size))
        rows = config.Data.micro_batch_size * config.Engine.accumulate_steps
        data.TrainBatches(train_rows, rows, config.Distributed.dp_degree, 0, 0, False)
    if command == "train":
        output.prepare(config)


def _check_devices(config: Config) -> None:
    """A CUDA build runs one process per GPU; a CPU build (gloo) runs any number."""
    import paddle

    if paddle.is_compiled_with_cuda() and (count := paddle.device.cuda.device_count()) < _nproc(config):
        raise config.error(
            f"Distributed: dp_degree {config.Distributed.dp_degree} x mp_degree {config.Distributed.mp_degree} = "
            f"{_nproc(config)} processes, one per GPU, but {count} GPU(s) are visible"
        )


def _launch(command: str, config_path: str, overrides: list[str], config: Config) -> int:
    from modbuild.engine.launch import launch

    args = [command, config_path, *[a for o in overrides for a in ("-o", o)]]
    log_dir = Path(config.Engine.save_load.output_dir) / "logs"
    print(f"{_nproc(config)} processes; rank 0's output follows, every rank's log is in {log_dir}", file=sys.stderr)
    return launch(args, _nproc(config), log_dir, echo=sys.stdout).returncode


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
        print(json.dumps({"steps": engine.state.step, "first_loss": losses[0], "last_loss": losses[-1]}), flush=True)
    return 0


def _evaluate(config: Config) -> int:
    engine = _engine(config)
    if config.Engine.save_load.ckpt_dir:
        engine.load(config.Engine.save_load.ckpt_dir)
    loss = engine.evaluate(0)
    if engine.dist.rank == 0:
        print(json.dumps({"step": engine.state.step, "eval_loss": loss}), flush=True)
    return 0
