"""The engine under `paddle.distributed.launch`, two real CPU processes over gloo (the project's collective shim):
data parallel of degree 2 against one process on the same global batch (run as a user would, `modbuild train`
from another directory), tensor parallel of degree 2 against 1, a TP checkpoint resumed at TP=2 and at TP=1, and
SIGTERM stopping every process a run started. Four launches, ~8-15 s each, mostly imports."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("paddle")

from engine_helpers import tiny_config, tiny_yaml

from modbuild.engine.engine import EagerEngine
from modbuild.engine.launch import ENVIRONMENT_DUMPS, launch
from modbuild.engine.module import CausalLMModule

BOUND = 1e-5  # relative, per step: only the order of float sums differs
REPO = Path(__file__).resolve().parents[1]
MODBUILD = [sys.executable, "-c", "import sys; from modbuild.cli import main; sys.exit(main(sys.argv[1:]))"]


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
    done = launch(args + [a for o in overrides for a in ("-o", o)], nproc=2, log_dir=out / "logs", timeout=300)
    assert done.returncode == 0, done.logs
    return logged_losses(out)


def assert_same_curve(got: list[float], want: list[float], steps: int = 8) -> None:
    assert len(got) == len(want) == steps
    worst = max(abs(a - b) / abs(b) for a, b in zip(got, want))
    assert worst <= BOUND, (worst, got, want)
    assert want[-1] < want[0]


def test_data_parallel_2_run_from_the_users_directory_equals_one_process(tmp_path):
    # one process: 4 rows a micro-batch; two: 2 rows each, so both step on the same 8 rows (x2 accumulation)
    want = single_process(tmp_path, "Data.micro_batch_size=4")
    user = tmp_path / "elsewhere"  # not the checkout: relative paths are the user's
    user.mkdir()
    tiny_yaml(user, name="my.yaml")
    temp_logs = set(Path(tempfile.gettempdir()).glob("engine_launch_*"))
    overrides = ["Distributed.dp_degree=2", "Data.micro_batch_size=2", "Model.config.attention_dropout=0.0"]
    done = subprocess.run(
        [
            *MODBUILD,
            "train",
            "my.yaml",
            *[a for o in overrides for a in ("-o", o)],
            "-o",
            "Engine.save_load.output_dir=run",
        ],
        cwd=user,
        capture_output=True,
        check=False,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert_same_curve(logged_losses(user / "run"), want)
    assert not (REPO / "run").exists()
    # rank 0's progress and result in the user's terminal, every rank's log under output_dir, none left in /tmp
    assert [line.split()[3] for line in done.stdout.splitlines() if line.startswith("epoch ")] == list("12345678")
    assert json.loads(done.stdout.strip().splitlines()[-1])["steps"] == 8
    logs = user / "run" / "logs"
    assert "step 8 loss" in (logs / "workerlog.0").read_text() and (logs / "workerlog.1").is_file()
    assert not [p for pattern in ENVIRONMENT_DUMPS for p in logs.glob(pattern)]  # no environment dumps kept
    assert set(Path(tempfile.gettempdir()).glob("engine_launch_*")) == temp_logs


def test_sigterm_stops_the_launcher_and_every_worker(tmp_path):
    import psutil  # visualdl's dependency, so the engine's

    endless = ["Distributed.dp_degree=2", "Data.micro_batch_size=2", "Engine.max_steps=100000"]
    endless.append("Engine.num_train_epochs=100000")
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [*MODBUILD, "train", str(tiny_yaml(tmp_path)), *[a for o in endless for a in ("-o", o)]],
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # as a terminal's foreground job: its own group, that a test can clean up
        )
    family = []
    try:
        deadline = time.monotonic() + 300
        while "step 3 loss" not in out.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "step 3 loss" in out.read_text(), out.read_text() + err.read_text()  # training, rank 0's lines shown
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) >= 3, family  # the launcher and two workers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
        _, alive = psutil.wait_procs(family, timeout=15)
        assert not alive, f"still running after the command returned: {alive}"
    finally:
        for p in [*family, psutil.Process(proc.pid) if proc.poll() is None else None]:
            if p is not None and p.is_running():
                p.kill()
        proc.wait()


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
