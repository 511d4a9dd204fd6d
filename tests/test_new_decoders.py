"""OLMo-2, GLM and GLM-4: checkpoints as HF's save_pretrained writes them (through the weights CLI), a broken copy
of each new block failing the `hf` check, the fused gate_up_proj's TP split rule, the train checks' handling of
elements only rounding noise reaches, and `modbuild new --from` each model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mutation import mutated

from modbuild.cli import main as modbuild_main
from modbuild.engine.tp_state import merge_parts
from modbuild.models import from_pretrained
from modbuild.verify import verify
from modbuild.verify.specs import left_padded_batch
from modbuild.verify.train_loop import Run, mark_trained, masked_max_rel, untrained_count
from modbuild.weights.cli import main as weights_main

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("olmo2", "glm", "glm4")
SIZES = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4}
# Only sizes and ids inside the small vocabulary: every other value is the HF class's default (GLM: partial rotary
# factor 0.5, head_dim 128, q/k/v biases, 2 kv heads; OLMo-2: pad 1, no bos), as a real checkpoint leaves them.
HF_CONFIGS = {
    "olmo2": ("Olmo2ForCausalLM", {"vocab_size": 96, "eos_token_id": 5, "num_key_value_heads": 2}),
    "glm": ("GlmForCausalLM", {"vocab_size": 96, "pad_token_id": 3, "eos_token_id": [5, 6], "head_dim": 32}),
    "glm4": ("Glm4ForCausalLM", {"vocab_size": 96, "pad_token_id": 3, "eos_token_id": 5, "head_dim": 32}),
}


@pytest.mark.parametrize("model", MODELS)
def test_hf_save_pretrained_checkpoint_converts_and_matches(model, tmp_path, capsys):
    """HF's own config.json (defaults omitted where HF omits them) through `python -m modbuild.weights hf2paddle`,
    loaded by model_type, gives HF's logits on a left-padded batch."""
    name, extra = HF_CONFIGS[model]
    cls = getattr(transformers, name)
    torch.manual_seed(0)
    net = cls(cls.config_class(**SIZES, **extra)).float().eval()
    with torch.no_grad():
        for pname, param in net.named_parameters():
            param.normal_(1.0 if "norm" in pname else 0.0, 0.2)
    net.save_pretrained(tmp_path / "hf", safe_serialization=True)
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert "bos_token_id" not in written  # HF omits it (None, the default): ours must not fall back to Llama's 1

    assert weights_main(["hf2paddle", "--src", str(tmp_path / "hf"), "--dst", str(tmp_path / "pd")]) == 0
    ours = from_pretrained(tmp_path / "pd", dtype="float32")
    ours.eval()
    for key in ("partial_rotary_factor", "head_dim", "pad_token_id", "bos_token_id", "attention_bias"):
        if hasattr(net.config, key):
            assert getattr(ours.config, key) == getattr(net.config, key), key
    batch = left_padded_batch(96)
    with torch.no_grad():
        theirs = net(input_ids=torch.tensor(batch["input_ids"]), attention_mask=torch.tensor(batch["attention_mask"]))
    with paddle.no_grad():
        mine = ours(
            input_ids=paddle.to_tensor(batch["input_ids"]),
            attention_mask=paddle.to_tensor(batch["attention_mask"]),
            return_dict=True,
        )
    real = batch["attention_mask"].astype(bool)
    assert np.abs(mine.logits.numpy()[real] - theirs.logits.numpy()[real]).max() <= 1e-4


PER_HEAD = '''

def per_head(norm, x, shape):
    """The mutation: RMSNorm over each head (Qwen 3's) with the same weights, not over the whole projection."""
    x = x.reshape(shape)
    x = x * paddle.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return x * norm.weight.reshape([-1, shape[-1]])
'''


def frozen_rope(cls: str, interleaved: bool) -> str:
    """The mutation: the model's rotary embedding without HF's ``dynamic_rope_update`` (frequencies of the
    config's init for every position)."""
    layout = "freqs.repeat_interleave(2, axis=-1)" if interleaved else "paddle.concat([freqs, freqs], axis=-1)"
    return f"""

def _frozen_forward(self, x, position_ids):
    freqs = position_ids.astype("float32").unsqueeze(-1) * self.inv_freq
    emb = {layout}
    return (emb.cos() * self.attention_scaling).astype(x.dtype), (emb.sin() * self.attention_scaling).astype(x.dtype)


{cls}.forward = _frozen_forward
"""


NO_ATTENTION_FACTOR = """

_init = GlmRotaryEmbedding.__init__


def _unscaled_init(self, config):
    _init(self, config)
    self.attention_scaling = 1.0


GlmRotaryEmbedding.__init__ = _unscaled_init
"""

MUTATIONS = {
    "olmo2-dynamic-rope-never-updated": (
        "olmo2",
        "modeling",
        "class Olmo2RotaryEmbedding(RotaryEmbedding):",
        "class Olmo2RotaryEmbedding(RotaryEmbedding):",
        frozen_rope("Olmo2RotaryEmbedding", interleaved=False),
    ),
    "glm-yarn-attention-factor-ignored": (
        "glm",
        "modeling",
        "class GlmRotaryEmbedding(RotaryEmbedding):",
        "class GlmRotaryEmbedding(RotaryEmbedding):",
        NO_ATTENTION_FACTOR,
    ),
    "glm4-longrope-short-factors-only": (
        "glm4",
        "modeling",
        "class Glm4RotaryEmbedding(RotaryEmbedding):",
        "class Glm4RotaryEmbedding(RotaryEmbedding):",
        frozen_rope("Glm4RotaryEmbedding", interleaved=True),
    ),
    "olmo2-qk-norm-per-head": (
        "olmo2",
        "modeling",
        "self.q_norm(self.q_proj(hidden_states)).reshape(hidden_shape)",
        "per_head(self.q_norm, self.q_proj(hidden_states), hidden_shape)",
        PER_HEAD,
    ),
    "olmo2-mlp-norm-before-not-after": (
        "olmo2",
        "modeling",
        "hidden_states + self.post_feedforward_layernorm(self.mlp(hidden_states))",
        "hidden_states + self.mlp(self.post_feedforward_layernorm(hidden_states))",
        "",
    ),
    "glm-rotation-in-halves": ("glm", "modeling", "interleaved = True", "interleaved = False", ""),
    "glm-partial-rotary-factor-ignored": (
        "glm",
        "configuration",
        "self.partial_rotary_factor = partial_rotary_factor",
        "self.partial_rotary_factor = 1.0",
        "",
    ),
    "glm-fused-halves-swapped": (
        "glm",
        "modeling",
        "gate, up_states = self.gate_up_proj(hidden_states).chunk(2, axis=-1)",
        "up_states, gate = self.gate_up_proj(hidden_states).chunk(2, axis=-1)",
        "",
    ),
    "glm4-post-attention-output-norm-dropped": (
        "glm4",
        "modeling",
        "hidden_states + self.post_self_attn_layernorm(attn_output)",
        "hidden_states + attn_output",
        "",
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_broken_block_fails_the_hf_check(tmp_path, name):
    model, *change = MUTATIONS[name]
    record = verify(model, "hf", mutated(tmp_path, model, *change))
    assert not record.error, record.error  # failed on the numbers, not by crashing
    assert not record.passed, record.metrics


def test_fused_gate_up_split_part_by_part():
    """Each rank gets its slice of the gate half and of the up half; merging the ranks' parts restores the tensor."""
    from generated.glm.modeling_glm import GlmConfig, GlmForCausalLM

    name = "glm.layers.0.mlp.gate_up_proj.weight"
    full = np.arange(3 * 8, dtype="float32").reshape(3, 8)  # [hidden, 2 * intermediate]: gate 0-3, up 4-7
    parts = []
    for rank in range(2):
        config = GlmConfig(**SIZES, head_dim=16, tensor_parallel_degree=2, tensor_parallel_rank=rank)
        split = GlmForCausalLM.get_tensor_parallel_convert_actions(config, [name], is_split=True)
        parts.append(split[name](full))
    np.testing.assert_array_equal(parts[0], full[:, [0, 1, 4, 5]])
    np.testing.assert_array_equal(parts[1], full[:, [2, 3, 6, 7]])
    merge = GlmForCausalLM.get_tensor_parallel_convert_actions(config, [name], is_split=False)
    np.testing.assert_array_equal(merge[name](parts), full)
    # The engine's TP checkpoints gather the ranks' parts the same way (a plain concatenation would interleave).
    np.testing.assert_array_equal(merge_parts(parts, 1, split[name]), full)


def test_train_comparison_leaves_out_noise_only_elements():
    """An element whose gradient is only rounding noise (nonzero, below 1e-6 x the largest) at every step is left
    out; one never touched (exactly zero) and one trained are compared."""
    run = Run()
    for noise in (3e-8, -2e-8):
        mark_trained(run, {"w": np.array([0.5, noise, 0.0], dtype="float32")})
    assert run.comparable("w").tolist() == [True, False, True]
    assert untrained_count(run) == 1
    ref, value = np.array([1.0, 1.0, 1.0]), np.array([1.0, 0.9, 1.0])
    assert masked_max_rel(value, ref, run.comparable("w")) == 0.0
    assert masked_max_rel(value + [0.01, 0, 0], ref, run.comparable("w")) == pytest.approx(0.01)


def test_new_model_from_each(tmp_path, capsys):
    """`modbuild new <x> --from <m>` for each new model, converted by doit in a copy of the project and checked
    against its modular file (the `modular` check)."""
    for model in ("llama", "qwen2", *MODELS):  # qwen2: `doit precision`'s model, which dodo.py always loads
        shutil.copytree(ROOT / "modular" / model, tmp_path / "modular" / model)
        shutil.copytree(ROOT / "generated" / model, tmp_path / "generated" / model)
    shutil.copy(ROOT / "generated" / "__init__.py", tmp_path / "generated" / "__init__.py")
    for name in ("dodo.py", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    tasks = []
    for model in MODELS:
        assert modbuild_main(["new", f"my_{model}", "--from", model, "--root", str(tmp_path)]) == 0
        tasks += [f"convert:my_{model}", f"verify:my_{model}:modular"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "doit", *tasks],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = json.loads((tmp_path / "reports" / "verify.json").read_text())["records"]
    assert {r["model"] for r in records if r["passed"]} == {f"my_{m}" for m in MODELS}
