"""What the commands print is their own: run as a user pipes them (stderr not a terminal), the weights CLI, the
engine and a `doit weights:<m>` conversion print no paddle ccache or setuptools distutils warning, no progress
bar and no INFO log line. (`generate`: tests/test_generate.py.) One process per command."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
from engine_helpers import tiny_yaml
from safetensors.numpy import load_file, save_file
from tiny_checkpoint import noise, run_quiet_check, write_tiny_llama

INV_FREQ = "model.layers.0.self_attn.rotary_emb.inv_freq"


@pytest.fixture(scope="module")
def hf_with_buffer(tmp_path_factory):
    """A tiny HF Llama that carries a rotary inv_freq buffer, which the converter skips and reports."""
    before = set(sys.modules)
    root = tmp_path_factory.mktemp("quiet")
    _, hf_dir = write_tiny_llama(root)
    src = shutil.copytree(hf_dir, root / "hf_buffer", ignore=shutil.ignore_patterns(".modbuild-weights.json"))
    tensors = load_file(src / "model.safetensors") | {INV_FREQ: np.ones(8, dtype="float32")}
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    yield src
    for name in [n for n in sys.modules if n.split(".")[0] == "generated" and n not in before]:
        del sys.modules[name]


def test_weights_cli_piped_prints_no_noise(hf_with_buffer, tmp_path):
    result = run_quiet_check(
        ["-m", "modbuild.weights", "hf2paddle", "--src", str(hf_with_buffer), "--dst", "out"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert noise(result.stderr) == [], result.stderr
    assert result.stderr.count(INV_FREQ) == 1, result.stderr  # the skipped key is still reported, once


def test_doit_weights_conversion_prints_no_info_line(hf_with_buffer, tmp_path):
    """`doit weights:<m>` runs `tasks.fetch_weights` in doit's process: quiet_third_party, then the converter. Paddle's
    import gave the root logger an INFO handler, so the converter's skipped-key note came out as an INFO line."""
    code = (
        "import sys\n"
        "from modbuild.verify.quiet import quiet_third_party\n"  # as tasks.fetch_weights imports it
        "quiet_third_party()\n"
        "from modbuild.weights import convert_hf_to_paddle\n"
        "convert_hf_to_paddle(sys.argv[1], sys.argv[2])\n"
    )
    result = run_quiet_check(["-c", code, str(hf_with_buffer), "out"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert result.stderr == ""


def test_engine_piped_prints_lines_not_a_bar(tmp_path):
    config = tiny_yaml(tmp_path)
    overrides = ["-o", "Engine.max_steps=2", "-o", "Engine.progress_bar=true"]
    result = run_quiet_check(["-m", "modbuild.cli", "train", str(config), *overrides], tmp_path)
    assert result.returncode == 0, result.stderr
    assert noise(result.stderr) == [], result.stderr
    assert "step 2 loss" in result.stdout and '"steps": 2' in result.stdout  # per-step lines instead of the bar
