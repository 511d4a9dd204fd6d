"""GPT-J: checkpoint conversion (old checkpoints with causal-mask buffers, new ones without), bit-exact round trips,
bad inputs, the TP split rules, and the interleaved partial RoPE against HF's own functions."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import paddle
import pytest
from safetensors.numpy import load_file, save_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from generated.gptj.modeling_gptj import GPTJConfig, GPTJForCausalLM, GPTJRotaryEmbedding
from modbuild.nn.rope import apply_interleaved_rotary, rotate_every_two
from modbuild.weights import WeightsError, convert_hf_to_paddle, convert_paddle_to_hf
from modbuild.weights.cli import main

# head_dim 16 with rotary_dim 8: half of each head rotated, half passed through.
TINY = {"vocab_size": 96, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 32, "rotary_dim": 8, "n_inner": 96}
BUFFER_REASON = "causal-mask buffers"


def skipped(caplog) -> list[str]:
    """The keys the converter reported skipping (it logs each, with its reason, at INFO)."""
    return [r.getMessage() for r in caplog.records if r.name == "modbuild.weights.convert"]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    """A random HF GPT-J (std 0.2, LayerNorm weights around 1) saved as transformers 4.55 writes it: no buffers."""
    config = transformers.GPTJConfig(**TINY, architectures=["GPTJForCausalLM"])
    torch.manual_seed(0)
    net = transformers.GPTJForCausalLM(config).float().eval()
    with torch.no_grad():
        for name, param in net.named_parameters():
            param.normal_(1.0 if name.endswith(("ln_1.weight", "ln_f.weight")) else 0.0, 0.2)
    directory = tmp_path_factory.mktemp("gptj") / "hf"
    net.save_pretrained(directory, safe_serialization=True)
    return directory


def rewrite(template: Path, directory: Path, drop=(), add=None, reshape=None) -> Path:
    """A copy of a single-file HF directory with tensors dropped, added or reshaped."""
    shutil.copytree(template, directory)
    tensors = {k: v for k, v in load_file(directory / "model.safetensors").items() if k not in drop} | (add or {})
    for name, shape in (reshape or {}).items():
        tensors[name] = np.zeros(shape, tensors[name].dtype)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


def old_style(hf_dir: Path, directory: Path) -> Path:
    """The checkpoint as older transformers saved it: each layer's causal mask and masked-score constant too."""
    n = TINY["n_positions"]
    mask = np.tril(np.ones((n, n), dtype=bool)).reshape(1, 1, n, n)
    buffers = {}
    for i in range(TINY["n_layer"]):
        buffers[f"transformer.h.{i}.attn.bias"] = mask
        buffers[f"transformer.h.{i}.attn.masked_bias"] = np.array(-1e9, dtype=np.float32)
    return rewrite(hf_dir, directory, add=buffers)


def test_name_mappings_cover_hf_state_dict_exactly(hf_dir):
    config = GPTJConfig(**TINY, architectures=["GPTJForCausalLM"])
    mappings = GPTJForCausalLM._get_name_mappings(config)
    assert {m.source_name for m in mappings} == set(load_file(hf_dir / "model.safetensors"))
    by_source = {m.source_name: (m.target_name, m.action) for m in mappings}
    assert by_source["transformer.wte.weight"] == ("gptj.embed_tokens.weight", None)
    assert by_source["transformer.h.1.attn.out_proj.weight"] == ("gptj.layers.1.self_attn.o_proj.weight", "transpose")
    assert by_source["transformer.h.0.ln_1.bias"] == ("gptj.layers.0.input_layernorm.bias", None)
    assert by_source["transformer.ln_f.bias"] == ("gptj.norm.bias", None)
    assert by_source["lm_head.bias"] == ("lm_head.bias", None)


def test_converted_matches_hf_logits_and_round_trips_bit_exact(hf_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="modbuild.weights")
    paddle_dir = convert_hf_to_paddle(hf_dir, tmp_path / "pd")
    ids = np.random.default_rng(0).integers(0, TINY["vocab_size"], size=(2, 12))
    net = transformers.GPTJForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        expected = net(torch.tensor(ids)).logits.numpy()
    ours = GPTJForCausalLM.from_pretrained(paddle_dir, dtype="float32").eval()
    with paddle.no_grad():
        got = ours(paddle.to_tensor(ids), return_dict=True).logits.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)

    back = convert_paddle_to_hf(paddle_dir, tmp_path / "rt")
    assert (back / "model.safetensors").read_bytes() == (hf_dir / "model.safetensors").read_bytes()
    assert json.loads((back / "config.json").read_text())["rotary_dim"] == TINY["rotary_dim"]
    assert skipped(caplog) == []


def test_old_checkpoint_buffers_are_skipped_and_reported(hf_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="modbuild.weights")
    old = old_style(hf_dir, tmp_path / "old")
    from_old = convert_hf_to_paddle(old, tmp_path / "from_old")
    keys = sorted(f"transformer.h.{i}.attn.{b}" for i in range(TINY["n_layer"]) for b in ("bias", "masked_bias"))
    messages = skipped(caplog)
    assert [m.split(":")[0] for m in messages] == [f"skipped {key}" for key in keys]
    assert all(BUFFER_REASON in m for m in messages)
    # The same weights as the buffer-free checkpoint gives, and back to the buffer-free HF file.
    from_new = convert_hf_to_paddle(hf_dir, tmp_path / "from_new")
    assert (from_old / "model.safetensors").read_bytes() == (from_new / "model.safetensors").read_bytes()
    back = convert_paddle_to_hf(from_old, tmp_path / "rt")
    assert (back / "model.safetensors").read_bytes() == (hf_dir / "model.safetensors").read_bytes()


def test_cli_prints_every_skipped_key(hf_dir, tmp_path, capsys):
    old = old_style(hf_dir, tmp_path / "old")
    assert main(["hf2paddle", "--src", str(old), "--dst", str(tmp_path / "pd"), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(tmp_path / "pd")]
    lines = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert len(lines) == 2 * TINY["n_layer"]
    assert lines[0].startswith("skipped transformer.h.0.attn.bias: ") and BUFFER_REASON in lines[0]


BAD_INPUTS = {
    "missing": (
        {"drop": ["transformer.h.1.mlp.fc_in.bias", "lm_head.bias"]},
        r"missing keys \(2\): lm_head\.bias, transformer\.h\.1\.mlp\.fc_in\.bias",
    ),
    # A key like the declared buffers' but not one of them is still unexpected.
    "unexpected": (
        {
            "add": {
                "transformer.h.0.attn.bias_extra": np.zeros(3, np.float32),
                "transformer.h.0.mlp.gate.weight": np.zeros(2, np.float32),
            }
        },
        r"unexpected keys \(2\): transformer\.h\.0\.attn\.bias_extra, transformer\.h\.0\.mlp\.gate\.weight",
    ),
    "shapes": (
        {"reshape": {"lm_head.bias": (95,), "transformer.h.0.attn.q_proj.weight": (64, 48)}},
        r"shape mismatch \(2\): lm_head\.bias \[95\].*transformer\.h\.0\.attn\.q_proj\.weight \[64, 48\]",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_lists_the_keys_and_writes_nothing(hf_dir, tmp_path, case):
    edits, message = BAD_INPUTS[case]
    src = rewrite(hf_dir, tmp_path / "src", **edits)
    with pytest.raises(WeightsError, match=message):
        convert_hf_to_paddle(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tensor_parallel_split_rules():
    """q/k/v, fc_in (with its bias) and lm_head (with its bias) split by columns; out_proj and fc_out by rows, fc_out's
    bias whole (added once, after the all-reduce); the embedding by vocabulary rows; LayerNorms replicated."""
    config = GPTJConfig(**TINY, tensor_parallel_degree=2, tensor_parallel_rank=1)
    actions = GPTJForCausalLM._get_tensor_parallel_mappings(config, is_split=True)
    names = {m.target_name.removeprefix("gptj.") for m in GPTJForCausalLM._get_name_mappings(config)}
    shapes = {"weight": (8, 6), "bias": (6,)}
    split = {}
    for name in sorted(names):
        if name in actions:
            full = np.arange(np.prod(shapes[name.rsplit(".", 1)[1]])).reshape(shapes[name.rsplit(".", 1)[1]])
            split[name] = actions[name](full).shape
    column, row = {"weight": (8, 3), "bias": (3,)}, {"weight": (4, 6)}
    expected = {f"layers.{i}.self_attn.{p}_proj.weight": column["weight"] for i in range(2) for p in "qkv"}
    expected |= {f"layers.{i}.mlp.fc_in.{k}": column[k] for i in range(2) for k in ("weight", "bias")}
    expected |= {f"layers.{i}.self_attn.o_proj.weight": row["weight"] for i in range(2)}
    expected |= {f"layers.{i}.mlp.fc_out.weight": row["weight"] for i in range(2)}
    expected |= {"embed_tokens.weight": row["weight"], "lm_head.weight": column["weight"], "lm_head.bias": (3,)}
    assert split == expected


def test_interleaved_partial_rope_matches_hf():
    from transformers.models.gptj import modeling_gptj as hf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 4, 16)).astype("float32")
    np.testing.assert_array_equal(
        rotate_every_two(paddle.to_tensor(x)).numpy(), hf.rotate_every_two(torch.tensor(x)).numpy()
    )
    config = GPTJConfig(**TINY)
    position_ids = np.array([[0, 1, 2, 3, 4], [0, 0, 0, 1, 2]])
    cos, sin = GPTJRotaryEmbedding(config)(paddle.to_tensor(x), paddle.to_tensor(position_ids))
    table = hf.create_sinusoidal_positions(TINY["n_positions"], TINY["rotary_dim"])
    sincos = table[torch.tensor(position_ids)]
    hf_sin, hf_cos = torch.split(sincos, TINY["rotary_dim"] // 2, dim=-1)
    got = apply_interleaved_rotary(paddle.to_tensor(x), cos.unsqueeze(2), sin.unsqueeze(2)).numpy()
    rot = TINY["rotary_dim"]
    expected = torch.cat(
        [hf.apply_rotary_pos_emb(torch.tensor(x[..., :rot]), hf_sin, hf_cos), torch.tensor(x[..., rot:])], -1
    )
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(got[..., rot:], x[..., rot:])
