"""The training engine in one process: exact resume, the hooks' outputs, and every bad input of issue 14."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("paddle")

from engine_helpers import tiny_config, tiny_yaml

from modbuild.engine import checkpoint
from modbuild.engine.cli import run
from modbuild.engine.config import ConfigError
from modbuild.engine.data import DataError
from modbuild.engine.engine import EagerEngine
from modbuild.engine.module import CausalLMModule


def make_engine(tmp: Path, *overrides: str) -> EagerEngine:
    config = tiny_config(tmp, *overrides)
    return EagerEngine(CausalLMModule(config), config)


def params(engine: EagerEngine) -> dict[str, np.ndarray]:
    return {n: p.numpy().copy() for n, p in engine.module.network.named_parameters()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """8 steps straight; and 4 steps (schedule for 8) saved, then a fresh process state resumed for 4 more."""
    straight_dir = tmp_path_factory.mktemp("straight")
    straight = make_engine(straight_dir)
    straight_losses = straight.fit()
    first_dir = tmp_path_factory.mktemp("staged")
    first = make_engine(
        first_dir,
        "Engine.max_steps=4",
        "Optimizer.decay_steps=8",
        "Engine.save_load.save_steps=4",
        "Engine.eval_freq=2",
    )
    first_losses = first.fit()
    ckpt = first_dir / "out"
    second = make_engine(
        first_dir, f"Engine.save_load.ckpt_dir={ckpt}", "Engine.save_load.output_dir=" + str(first_dir / "out2")
    )
    second_losses = second.fit()
    return {
        "straight": (straight_losses, params(straight), straight),
        "staged": (first_losses + second_losses, params(second), second),
        "ckpt": ckpt / "step_00000004",
        "first": first,
    }


def test_resume_is_bit_identical(runs):
    straight_losses, straight_params, _ = runs["straight"]
    staged_losses, staged_params, second = runs["staged"]
    assert len(straight_losses) == 8 and second.state.step == 8
    assert straight_losses == staged_losses  # exact: the same floats, step by step
    for name, value in straight_params.items():
        assert np.array_equal(value, staged_params[name]), name
    assert straight_losses[-1] < straight_losses[0]


def test_checkpoint_holds_what_resume_needs(runs):
    state = checkpoint.load(runs["ckpt"], runs["first"].module.network, runs["first"].optimizer)
    assert (state.step, state.epoch, state.batch) == (4, 1, 1)  # 3 batches an epoch: the 4th is epoch 1's first
    assert set(state.rng) == {"paddle", "numpy", "python"} and state.lr_scheduler


def test_logs_csv_png_and_visualdl(runs):
    out = runs["ckpt"].parent
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,loss,lr,tokens_per_s,elapsed,eval_loss"
    assert len([r for r in rows[1:] if r.split(",")[2]]) == 4  # logging_freq 1, 4 steps
    assert len([r for r in rows[1:] if r.split(",")[-1]]) == 2  # eval_freq 2
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "vdl").glob("vdlrecords.*"))


def test_keep_last_and_hooks(tmp_path):
    seen = []
    engine = make_engine(tmp_path, "Engine.max_steps=6", "Engine.save_load.save_by_steps=1", "Engine.logging_freq=3")
    engine.module.training_step_end = seen.append
    engine.fit()
    assert [p.name for p in checkpoint.checkpoints(tmp_path / "out")] == ["step_00000005", "step_00000006"]
    assert [d["step"] for d in seen] == [3, 6]
    assert set(seen[0]) == {"epoch", "step", "loss", "lr", "tokens_per_s", "elapsed"}
    predictions = engine.predict()
    assert predictions and predictions[0]["next_tokens"].shape == (2, 32)
    assert np.isfinite(engine.evaluate(1))


# ------------------------------------------------------------------------------------------------- bad config


def test_unknown_key_names_path_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"Engine\.max_stpes: unknown key; did you mean Engine\.max_steps\?"):
        tiny_config(tmp_path, "Engine.max_stpes=3")
    with pytest.raises(
        ConfigError, match=r"Engine\.save_load\.save_step: unknown key; did you mean Engine\.save_load\.save_steps\?"
    ):
        tiny_config(tmp_path, "Engine.save_load.save_step=3")


def test_wrong_type_names_path(tmp_path):
    with pytest.raises(ConfigError, match=r"tiny\.yaml.*Engine\.max_steps: Input should be a valid integer.*'ten'"):
        tiny_config(tmp_path, "Engine.max_steps=ten")


def test_model_config_field_is_checked(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"Model\.config\.hiden_size: not a field of Qwen2Config; did you mean Model\.config\.hidden_size\?",
    ):
        make_engine(tmp_path, "Model.config.hiden_size=16")


def test_overrides_are_yaml_never_eval(tmp_path):
    marker = tmp_path / "evaluated"
    config = tiny_config(tmp_path, f"Data.source=__import__('pathlib').Path('{marker}').touch()", "Optimizer.lr=1e-2")
    assert not marker.exists() and config.Data.source.startswith("__import__")
    assert config.Optimizer.lr == 0.01
    with pytest.raises(ConfigError, match=r"-o Engine\.max_steps=\[1: the value is not valid YAML"):
        tiny_config(tmp_path, "Engine.max_steps=[1")
    with pytest.raises(ConfigError, match=r"expected Section\.key=value"):
        tiny_config(tmp_path, "Engine.max_steps")


def test_save_steps_is_an_alias(tmp_path):
    assert tiny_config(tmp_path, "Engine.save_load.save_steps=5").Engine.save_load.save_by_steps == 5
    assert tiny_config(tmp_path, "Engine.save_load.save_by_steps=6").Engine.save_load.save_by_steps == 6


def test_mixed_precision_on_cpu_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"Engine\.mix_precision: .*CUDA build"):
        make_engine(tmp_path, "Engine.mix_precision.use_pure_fp16=true")


def test_dataset_shorter_than_a_batch(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("too short " * 20)  # 200 bytes: 6 windows of 32, fewer than a batch of 4 + eval
    with pytest.raises(DataError, match=r"fewer than one batch of 4"):
        make_engine(tmp_path, f"Data.source={short}", "Data.eval_fraction=0.5").fit()
    with pytest.raises(DataError, match=r"the eval split has 0 windows, fewer than one batch of 2"):
        make_engine(tmp_path, "Data.eval_fraction=0.0", "Engine.eval_freq=2").fit()
    assert not (tmp_path / "out").exists()  # refused before anything was written


# ------------------------------------------------------------------------------------------- bad checkpoints


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def resume_fails(tmp_path: Path, ckpt: Path, capsys, *overrides: str) -> str:
    """`modbuild train` resuming from `ckpt` must exit 2 and leave the checkpoint's directory as it was."""
    root = ckpt.parent
    before = snapshot(root)
    config = tiny_yaml(tmp_path)
    status = run(
        "train",
        str(config),
        [
            f"Engine.save_load.ckpt_dir={ckpt}",
            f"Engine.save_load.output_dir={root}",
            "Engine.save_load.save_steps=1",
            *overrides,
        ],
    )
    assert status == 2
    assert snapshot(root) == before  # nothing written, nothing overwritten
    return capsys.readouterr().err


@pytest.fixture
def ckpt_copy(runs, tmp_path) -> Path:
    target = tmp_path / "ckpts" / runs["ckpt"].name
    shutil.copytree(runs["ckpt"], target)
    return target


def test_missing_ckpt_dir(tmp_path, capsys):
    status = run("train", str(tiny_yaml(tmp_path)), [f"Engine.save_load.ckpt_dir={tmp_path / 'nowhere'}"])
    err = capsys.readouterr().err
    assert status == 2 and f"Engine.save_load.ckpt_dir: {tmp_path / 'nowhere'} does not exist" in err
    assert not (tmp_path / "out").exists()


def test_truncated_checkpoint(tmp_path, ckpt_copy, capsys):
    model = ckpt_copy / checkpoint.MODEL
    model.write_bytes(model.read_bytes()[:1000])
    err = resume_fails(tmp_path, ckpt_copy, capsys)
    assert f"{model}: truncated or altered" in err


def test_corrupt_checkpoint(tmp_path, ckpt_copy, capsys):
    opt = ckpt_copy / checkpoint.OPTIMIZER
    blob = bytearray(opt.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    opt.write_bytes(bytes(blob))
    err = resume_fails(tmp_path, ckpt_copy, capsys)
    assert f"{opt}: corrupt" in err


def test_incomplete_checkpoint(tmp_path, ckpt_copy, capsys):
    (ckpt_copy / "meta.json").unlink()
    assert "is not a complete checkpoint" in resume_fails(tmp_path, ckpt_copy, capsys)


def test_checkpoint_shapes_must_match(tmp_path, ckpt_copy, capsys):
    err = resume_fails(tmp_path, ckpt_copy, capsys, "Model.config.intermediate_size=48")
    assert f"{checkpoint.MODEL}: " in err and "has shape [32, 64] in the checkpoint, [32, 48] in the model" in err


# ------------------------------------------------------------------------------------------- SIGTERM in a save

_SLOW_SAVE = """
import sys, time
from pathlib import Path
from modbuild.engine import checkpoint
from modbuild.engine.cli import run

real, saves = checkpoint.atomic_write, []

def slow(path, text):  # the second checkpoint's meta.json: announce, then hang mid-save
    if Path(path).name == "meta.json":
        saves.append(path)
        if len(saves) == 2:
            Path(sys.argv[2]).touch()
            time.sleep(120)
    real(path, text)

checkpoint.atomic_write = slow
sys.exit(run("train", sys.argv[1], sys.argv[3:]))
"""


def test_sigterm_during_save_keeps_the_previous_checkpoint(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    config, marker, out = tiny_yaml(tmp_path), tmp_path / "saving", tmp_path / "out"
    overrides = ["Engine.max_steps=4", "Engine.save_load.save_steps=2"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_SAVE, str(config), str(marker), *overrides],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), proc.communicate()[1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()  # never leave it sleeping if an assertion failed
        proc.wait()
    assert [p.name for p in out.iterdir() if "step" in p.name] == ["step_00000002"]  # no step 4, no temporary left
    checkpoint._verified(out / "step_00000002")
    # the next run resumes from step 2: the log continues 3, 4 after the killed run's 1, 2
    assert run("train", str(config), [*overrides, f"Engine.save_load.ckpt_dir={out}"]) == 0
    steps = [line.split(",")[0] for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2", "3", "4"]
    assert [p.name for p in checkpoint.checkpoints(out)] == ["step_00000002", "step_00000004"]


# ------------------------------------------------------------------------------------------------ entry points


def test_shipped_configs_validate():
    from modbuild.engine.config import load

    root = Path(__file__).parents[1] / "configs"
    tiny = load(root / "tiny_qwen2.yaml")
    assert tiny.Engine.save_load.save_by_steps == 100  # written as save_steps
    assert load(root / "finetune_smollm2.yaml").Model.init_from == ".cache/weights/smollm2/paddle"


def test_modbuild_train_and_evaluate_commands(runs, tmp_path, capsys):
    from modbuild.cli import main

    config = str(tiny_yaml(tmp_path))
    assert main(["train", config, "-o", "Engine.max_steps=2", "-o", "Engine.save_load.save_steps=2"]) == 0
    assert '"steps": 2' in capsys.readouterr().out
    assert (tmp_path / "out" / "step_00000002" / "meta.json").is_file()
    assert main(["evaluate", config, "-o", f"Engine.save_load.ckpt_dir={runs['ckpt']}"]) == 0
    assert '"step": 4, "eval_loss"' in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------- issue 19


def test_evaluate_without_a_checkpoint_is_refused(tmp_path, capsys):
    assert run("evaluate", str(tiny_yaml(tmp_path)), []) == 2
    err = capsys.readouterr().err
    assert "tiny.yaml: Engine.save_load.ckpt_dir: not set" in err and "never a randomly initialised one" in err


def test_training_again_into_an_earlier_run_is_refused_resumed_or_started_clean(tmp_path, capsys):
    config, out = str(tiny_yaml(tmp_path)), tmp_path / "out"
    first = ["Engine.max_steps=4", "Engine.save_load.save_steps=2", "Optimizer.decay_steps=6"]
    assert run("train", config, first) == 0
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    # from scratch into it: refused, nothing touched
    assert run("train", config, ["Engine.max_steps=2"]) == 2
    err = capsys.readouterr().err
    assert (
        f"Engine.save_load.output_dir: {out} holds an earlier run (step_00000002, step_00000004, metrics.csv)" in err
    )
    assert f"-o Engine.save_load.ckpt_dir={out}" in err and "-o Engine.save_load.overwrite=true" in err
    assert snapshot(out) == before
    # resumed in place: continues the same log
    assert run("train", config, [*first[1:], "Engine.max_steps=6", f"Engine.save_load.ckpt_dir={out}"]) == 0
    steps = [line.split(",")[0] for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2", "3", "4", "5", "6"]
    # overwrite and resume from inside it at once: refused
    both = ["Engine.save_load.overwrite=true", f"Engine.save_load.ckpt_dir={out}"]
    assert run("train", config, both) == 2
    assert "Engine.save_load.overwrite: would delete" in capsys.readouterr().err
    # overwrite: the engine's files go, the user's stay
    assert run("train", config, ["Engine.max_steps=2", "Engine.save_load.save_steps=2", both[0]]) == 0
    assert [p.name for p in checkpoint.checkpoints(out)] == ["step_00000002"]
    assert len((out / "metrics.csv").read_text().splitlines()) == 3
    assert (out / "notes.txt").read_text() == "mine"


def test_model_config_values_and_degrees_are_checked_before_anything_runs(tmp_path, capsys):
    config = str(tiny_yaml(tmp_path))
    cases = {
        "Model.config.hidden_size=abc": ["Model.config.hidden_size: Input should be a valid integer (got 'abc')"],
        "Model.config.num_attention_heads=5": [
            "Model.config.hidden_size: 32 is not a multiple of num_attention_heads 5",
            "Model.config.num_key_value_heads: 2 does not divide num_attention_heads 5",
        ],
        "Model.config.rope_scaling=3": ["Model.config.rope_scaling: Input should be a valid dictionary (got 3)"],
        "Model.config.num_hidden_layers=0": ["Model.config.num_hidden_layers: must be a positive integer"],
        # refused here, before paddle.distributed.launch starts (it hung, or died in an AssertionError)
        "Distributed.mp_degree=3": [
            f"Distributed.mp_degree: 3 does not divide Model.config.{name} ({value})"
            for name, value in [
                ("num_attention_heads", 4),
                ("num_key_value_heads", 2),
                ("vocab_size", 128),
                ("intermediate_size", 64),
            ]
        ],
    }
    for override, messages in cases.items():
        assert run("train", config, [override]) == 2, override
        err = capsys.readouterr().err
        for message in messages:
            assert f"tiny.yaml (with -o {override}): {message}" in err, (message, err)
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_global_seed_seeds_numpy_and_python_random(tmp_path):
    import random

    def draws(*overrides: str) -> list[tuple[float, float]]:
        engine = make_engine(tmp_path, "Engine.max_steps=2", *overrides)
        seen = []
        engine.module.training_step_end = lambda log: seen.append((np.random.rand(), random.random()))
        engine.fit()
        return seen

    first = draws()
    np.random.seed(99)  # whatever happened in between, the next engine starts from Global.seed
    random.seed(99)
    assert draws() == first
    assert draws("Global.seed=8") != first


def test_a_directory_as_config_is_a_clear_error(tmp_path, capsys):
    configs = Path(__file__).parents[1] / "configs"
    assert run("train", str(configs), []) == 2
    err = capsys.readouterr().err
    assert f"{configs}: is a directory; expected a YAML config file; it holds finetune_smollm2.yaml" in err


class _Payload:
    """Unpickling this creates a file: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _replace_with_payload(ckpt: Path, name: str, marker: Path) -> None:
    """Put a pickle payload in file `name` and record its size and SHA-256 in meta.json, as an attacker can."""
    import hashlib
    import json
    import pickle

    file = ckpt / name
    file.write_bytes(pickle.dumps(_Payload(marker)))
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["files"][name] = {"bytes": file.stat().st_size, "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}
    (ckpt / "meta.json").write_text(json.dumps(meta))


def test_loading_a_checkpoint_never_runs_code(runs, tmp_path, capsys):
    marker = tmp_path / "pwned"
    for name in (checkpoint.STATE, checkpoint.MODEL, checkpoint.OPTIMIZER):
        ckpt = tmp_path / name / "ckpts" / runs["ckpt"].name
        shutil.copytree(runs["ckpt"], ckpt)
        _replace_with_payload(ckpt, name, marker)
        err = resume_fails(tmp_path, ckpt, capsys)
        assert not marker.exists(), f"unpickling {name} ran code"
        assert f"{ckpt / name}: not a" in err
    # a format-1 checkpoint (model.pdparams, optimizer.pdopt, state.pkl) is refused without reading its files
    legacy = tmp_path / "legacy" / "ckpts" / runs["ckpt"].name
    shutil.copytree(runs["ckpt"], legacy)
    (legacy / "meta.json").write_text('{"format": 1, "step": 4, "files": {}}')
    err = resume_fails(tmp_path, legacy, capsys)
    assert "checkpoint format 1, this modbuild reads format 2 only" in err and "holds pickles" in err
    assert not marker.exists()
