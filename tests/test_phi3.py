"""Phi-3: each new block, broken on its own, fails the model's `hf` check; the fused projections split part by part
under TP (q, k and v by heads; gate and up by halves) and merge back; checkpoints HF's `save_pretrained` writes
convert both ways; greedy decoding across the longrope switch equals decoding without a cache; `modbuild new --from
phi3` builds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from mutation import mutated
from test_gemma2_3 import logits_of

from modbuild.cli import main as modbuild_main
from modbuild.engine.tp_state import merge_parts
from modbuild.models import from_pretrained
from modbuild.nn.parallel import merge_fused, split_fused
from modbuild.verify import verify
from modbuild.verify.hf_check import hf_model, load_converted
from modbuild.verify.paddle_run import greedy
from modbuild.verify.specs import TINY, generated, left_padded_batch, spec
from modbuild.weights.cli import main as weights_main

ROOT = Path(__file__).resolve().parents[1]

# name -> (the generated line, its broken version)
MUTATIONS = {
    "qkv-split-k-and-v-swapped": (
        "query, key, value = qkv.split([self.q_width, self.kv_width, self.kv_width], axis=-1)",
        "query, value, key = qkv.split([self.q_width, self.kv_width, self.kv_width], axis=-1)",
    ),
    "gate-up-halves-swapped": (
        "gate, up_states = self.gate_up_proj(hidden_states).chunk(2, axis=-1)",
        "up_states, gate = self.gate_up_proj(hidden_states).chunk(2, axis=-1)",
    ),
    "long-factors-ignored": (
        '    """HF\'s, with longrope\'s switch to the long factors (``modbuild.nn.rope``)."""\n',
        (
            "    def forward(self, x, position_ids):\n"
            '        self.rope_type = "default"  # never switches to the long factors\n'
            "        return super().forward(x, position_ids)\n"
        ),
    ),
    "longrope-attention-factor-ignored": (
        '    """HF\'s, with longrope\'s switch to the long factors (``modbuild.nn.rope``)."""\n',
        "    def __init__(self, config):\n        super().__init__(config)\n        self.attention_scaling = 1.0\n",
    ),
    "cache-kept-across-the-switch": (
        "return bool(self.config.rope_scaling) and length >= original + 1 and past_length <= original",
        "return False",
    ),
}


def test_unbroken_phi3_passes_its_hf_check():
    record = verify("phi3", "hf")
    assert record.passed, record.failures()
    assert record.metrics["decode_mismatch"] == 0


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_each_new_block_broken_fails_the_hf_check(tmp_path, name):
    old, new = MUTATIONS[name]
    record = verify("phi3", "hf", mutated(tmp_path, "phi3", "modeling", old, new))
    assert not record.passed
    broken = [k for k in ("logits", "decode_mismatch") if record.metrics[k] > record.bounds[k]]
    assert broken, record.metrics


def test_spec_values_make_each_feature_visible():
    """Half of each head rotated, a window and the longrope switch the hf check's decoding crosses (prompt 10 tokens,
    8 decoded), GQA so that q, k and v are unequal parts of qkv_proj."""
    config, prompt_length = spec("phi3").config, left_padded_batch(TINY["vocab_size"])["input_ids"].shape[1]
    assert 0 < config["partial_rotary_factor"] < 1
    assert prompt_length <= config["original_max_position_embeddings"] < prompt_length + 8
    assert config["sliding_window"] < prompt_length + 8
    assert config["rope_scaling"]["short_factor"] != config["rope_scaling"]["long_factor"]
    assert TINY["num_key_value_heads"] < TINY["num_attention_heads"]


def _tp_config(rank: int):
    _, configuration = generated("phi3")
    return configuration.Phi3Config(
        **TINY | spec("phi3").config, tensor_parallel_degree=2, tensor_parallel_rank=rank, architectures=["x"]
    )


def test_fused_projections_split_part_by_part_and_merge_back():
    """Each rank gets whole heads of q, of k and of v (4, 2 and 2 heads of 16), and half of gate and of up."""
    modeling, _ = generated("phi3")
    cls, hidden, head, inter = modeling.Phi3ForCausalLM, TINY["hidden_size"], 16, TINY["intermediate_size"]
    qkv = np.arange(hidden * 8 * head, dtype="float32").reshape(hidden, 8 * head)  # Paddle layout [in, out]
    q, k, v = qkv[:, : 4 * head], qkv[:, 4 * head : 6 * head], qkv[:, 6 * head :]
    gate_up = np.arange(hidden * 2 * inter, dtype="float32").reshape(hidden, 2 * inter)
    gate, up = gate_up[:, :inter], gate_up[:, inter:]
    shares = {}
    for rank in (0, 1):
        actions = cls._get_tensor_parallel_mappings(_tp_config(rank), is_split=True)
        share = actions["layers.1.self_attn.qkv_proj.weight"](qkv)
        heads = slice(rank * 2 * head, (rank + 1) * 2 * head), slice(rank * head, (rank + 1) * head)
        np.testing.assert_array_equal(share, np.concatenate([q[:, heads[0]], k[:, heads[1]], v[:, heads[1]]], -1))
        half = slice(rank * inter // 2, (rank + 1) * inter // 2)
        gate_up_share = actions["layers.1.mlp.gate_up_proj.weight"](gate_up)
        np.testing.assert_array_equal(gate_up_share, np.concatenate([gate[:, half], up[:, half]], -1))
        shares.setdefault("qkv", []).append(share)
        shares.setdefault("gate_up", []).append(gate_up_share)
    merges = cls._get_tensor_parallel_mappings(_tp_config(0), is_split=False)
    np.testing.assert_array_equal(merges["layers.0.self_attn.qkv_proj.weight"](shares["qkv"]), qkv)
    np.testing.assert_array_equal(merges["layers.0.mlp.gate_up_proj.weight"](shares["gate_up"]), gate_up)
    # The engine's TP checkpoints gather the ranks' shares the same way (concatenated, k would land among the q).
    np.testing.assert_array_equal(merge_parts(shares["qkv"], 1, actions["layers.1.self_attn.qkv_proj.weight"]), qkv)


def test_split_fused_refuses_an_axis_the_parts_do_not_divide():
    with pytest.raises(ValueError, match=r"a fused axis of 10 features does not divide into parts of \[4, 2, 2\]"):
        split_fused(np.zeros((3, 10)), [4, 2, 2], degree=2, rank=0)
    np.testing.assert_array_equal(merge_fused([np.ones((2, 4))], [1, 1]), np.ones((2, 4)))


def test_config_checks_rope_scaling_as_hf_and_keeps_its_spelling():
    _, configuration = generated("phi3")
    factors = {"short_factor": [1.0] * 4, "long_factor": [2.0] * 4}
    for kind in ("su", "yarn", "longrope"):  # HF's older names of longrope
        config = configuration.Phi3Config(**TINY, partial_rotary_factor=0.5, rope_scaling={"type": kind, **factors})
        assert config.rope_scaling == {"type": "longrope", **factors}
        assert transformers.Phi3Config(**config.to_diff_dict()).rope_scaling == {"type": "longrope", **factors}
    with pytest.raises(ValueError, match=r"rope_scaling long_factor must list 4 numbers .*, not \[2.0, 2.0\]"):
        configuration.Phi3Config(
            **TINY, partial_rotary_factor=0.5, rope_scaling={"type": "longrope", **factors, "long_factor": [2.0] * 2}
        )
    with pytest.raises(ValueError, match=r"rope_scaling must be \{'type': 'longrope'"):
        configuration.Phi3Config(**TINY, rope_scaling={"type": "linear", "factor": 2.0})


def test_hf_saved_checkpoint_converts_both_ways(tmp_path):
    """HF's own config.json (no --model): longrope and the fused tensors in, and HF reads our conversion back."""
    net = hf_model("phi3")
    hf_dir, paddle_dir, back_dir = tmp_path / "hf", tmp_path / "paddle", tmp_path / "back"
    net.save_pretrained(hf_dir, safe_serialization=True)
    written = json.loads((hf_dir / "config.json").read_text())
    assert written["model_type"] == "phi3" and written["rope_scaling"]["type"] == "longrope"
    assert weights_main(["hf2paddle", "--src", str(hf_dir), "--dst", str(paddle_dir), "--no-progress"]) == 0
    ours = from_pretrained(paddle_dir, dtype="float32")
    ids = np.random.default_rng(1).integers(1, TINY["vocab_size"], size=(1, 20)).astype("int64")  # past 12: long
    with torch.no_grad():
        expected = net(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(logits_of(ours, ids), expected, atol=1e-4)

    assert weights_main(["paddle2hf", "--src", str(paddle_dir), "--dst", str(back_dir), "--no-progress"]) == 0
    again = transformers.AutoModelForCausalLM.from_pretrained(back_dir, attn_implementation="eager").eval()
    assert type(again).__name__ == "Phi3ForCausalLM" and again.config.rope_scaling == net.config.rope_scaling
    with torch.no_grad():
        np.testing.assert_allclose(again(torch.tensor(ids)).logits.numpy(), expected, atol=1e-5)


def _greedy_without_cache(net: torch.nn.Module, prompt: np.ndarray, new_tokens: int) -> list[int]:
    ids = torch.tensor(prompt)
    for _ in range(new_tokens):
        with torch.no_grad():
            token = net(ids).logits[0, -1].argmax()
        ids = torch.cat([ids, token.view(1, 1)], 1)
    return ids[0, prompt.shape[1] :].tolist()


def test_decoding_across_the_longrope_switch_equals_decoding_without_cache(tmp_path):
    """A window of 6, active when the sequence is rerun at the switch (13 tokens): our cache dropped there gives HF's
    tokens without any cache. HF's `generate` does not: its rerun passes one cache position, so eager attention
    drops the causal mask and SDPA the window (transformers 4.55.4), which is why the hf check uses a window of 13."""
    net = hf_model("phi3", sliding_window=6)
    ours = load_converted(net, "phi3", tmp_path)
    prompt = left_padded_batch(TINY["vocab_size"])["input_ids"][1:2]
    expected = _greedy_without_cache(net, prompt, 8)
    assert greedy(ours, prompt, 8) == expected
    assert len(set(expected)) > 1
    net.config._attn_implementation = "sdpa"
    ids = torch.tensor(prompt)
    hf_generated = net.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=0, max_new_tokens=8)
    assert hf_generated[0, prompt.shape[1] :].tolist() != expected


def test_new_model_from_phi3_converts_and_verifies(tmp_path):
    project = tmp_path / "project"
    for model in ("llama", "qwen2", "mistral", "glm", "phi3"):  # qwen2: `doit precision`'s, which dodo.py loads
        shutil.copytree(ROOT / "modular" / model, project / "modular" / model)
        shutil.copytree(ROOT / "generated" / model, project / "generated" / model)
    shutil.copy(ROOT / "generated" / "__init__.py", project / "generated" / "__init__.py")
    for name in ("dodo.py", "pyproject.toml"):
        shutil.copy(ROOT / name, project / name)
    assert modbuild_main(["new", "my_phi3", "--from", "phi3", "--root", str(project)]) == 0
    result = subprocess.run(  # noqa: PLW1510 - the return code is asserted below, with the output
        [sys.executable, "-m", "doit", "convert:my_phi3", "verify:my_phi3:modular", "verify:my_phi3:hf"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(project)},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = json.loads((project / "reports" / "verify.json").read_text())["records"]
    assert sorted((r["model"], r["check"]) for r in records if r["passed"]) == [
        ("my_phi3", "hf"),
        ("my_phi3", "modular"),
    ]
    modeling = (project / "generated" / "my_phi3" / "modeling_my_phi3.py").read_text().split('"""', 2)[2]
    assert "class MyPhi3ForCausalLM(MyPhi3PretrainedModel):" in modeling
    assert "Phi3" not in modeling.replace("MyPhi3", "")


def test_hf_generate_attention_is_read_and_checked(tmp_path):
    from modbuild.verify.specs import SpecError, load_spec

    assert spec("phi3").hf_generate_attention == "sdpa" and spec("mistral").hf_generate_attention == "eager"
    path = tmp_path / "model.toml"
    path.write_text('[verify]\nhf_class = "Phi3ForCausalLM"\nhf_generate_attention = "flash"\n')
    with pytest.raises(
        SpecError, match=rf"^{path}: verify.hf_generate_attention must be one of eager, sdpa, not 'flash'"
    ):
        load_spec(path, "phi3")
