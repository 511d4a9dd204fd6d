"""The engine under `paddle.distributed.launch`, two real CPU processes over gloo (the project's collective shim):
data parallel of degree 2 against one process on the same global batch, tensor parallel of degree 2 against 1,
and a TP checkpoint resumed at TP=2 and at TP=1. Three launches, ~8-15 s each, mostly imports."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

pytest.importorskip("paddle")

from engine_helpers import tiny_config, tiny_yaml

from modbuild.engine.engine import EagerEngine
from modbuild.engine.launch import launch
from modbuild.engine.module import CausalLMModule

BOUND = 1e-5  # relative, per step: only the order of float sums differs


def logged_losses(output_dir: Path) -> list[float]:
    with open(output_dir / "metrics.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]


def single_process(tmp: Path, *overrides: str) -> list[float]:
    config = tiny_config(tmp, "Model.config.attention_dropout=0.0", *overrides)
    return EagerEngine(CausalLMModule(config), config).fit()


def two_processes(tmp: Path, *overrides: str, out: str = "launched") -> list[float]:
    out = tmp / out
    args = [
        "train",
        str(tiny_yaml(tmp)),
        "-o",
        "Model.config.attention_dropout=0.0",
        "-o",
        f"Engine.save_load.output_dir={out}",
    ]
    done = launch(args + [a for o in overrides for a in ("-o", o)], nproc=2, timeout=300)
    assert done.returncode == 0, done.logs
    return logged_losses(out)


def assert_same_curve(got: list[float], want: list[float], steps: int = 8) -> None:
    assert len(got) == len(want) == steps
    worst = max(abs(a - b) / abs(b) for a, b in zip(got, want))
    assert worst <= BOUND, (worst, got, want)
    assert want[-1] < want[0]


def test_data_parallel_2_equals_one_process_on_the_global_batch(tmp_path):
    # one process: 4 rows a micro-batch; two: 2 rows each, so both step on the same 8 rows (x2 accumulation)
    want = single_process(tmp_path, "Data.micro_batch_size=4")
    got = two_processes(tmp_path, "Distributed.dp_degree=2", "Data.micro_batch_size=2")
    assert_same_curve(got, want)


def test_tensor_parallel_2_equals_degree_1_and_its_checkpoint_resumes_at_either_degree(tmp_path):
    want = single_process(tmp_path)  # 8 steps at TP=1
    stage = ["Engine.max_steps=4", "Optimizer.decay_steps=8", "Engine.save_load.save_steps=4"]
    first = two_processes(tmp_path, "Distributed.mp_degree=2", *stage)
    ckpt = f"Engine.save_load.ckpt_dir={tmp_path / 'launched'}"
    # the checkpoint holds full tensors (gathered over the TP group): TP=2 splits them again, TP=1 takes them whole
    resumed_tp2 = two_processes(tmp_path, "Distributed.mp_degree=2", ckpt, out="resumed")
    resumed_tp1 = single_process(tmp_path, ckpt, f"Engine.save_load.output_dir={tmp_path / 'resumed_tp1'}")
    assert_same_curve(first + resumed_tp2, want)
    assert_same_curve(resumed_tp1, want[4:], steps=4)


def test_degrees_must_match_the_processes(tmp_path):
    from modbuild.engine.config import ConfigError

    with pytest.raises(ConfigError, match=r"dp_degree 1 x mp_degree 3 = 3 processes, but 1 running"):
        CausalLMModule(tiny_config(tmp_path, "Distributed.mp_degree=3"))
