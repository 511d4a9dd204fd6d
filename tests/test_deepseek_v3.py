"""DeepSeek-V3: each new block (MLA, yarn's softmax scale, group-limited routing, the correction bias, shared experts),
broken on its own, fails the `hf` check; the plain-q variant (q_lora_rank None) matches HF too; the check's tiny
config makes the correction bias and the group limit change the selection; the routing matches HF's own router where
its 0.0 masking matters; the KV cache holds what HF's holds; HF's saved checkpoints convert both ways, bit-exact."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import paddle
import pytest
import torch
import transformers
from mutation import mutated
from safetensors.numpy import load_file

from modbuild.models import from_pretrained
from modbuild.nn.moe_routing import sigmoid_topk_routing
from modbuild.verify import verify
from modbuild.verify.hf_check import compare, compare_decoding, hf_model, load_converted
from modbuild.verify.record import Record
from modbuild.verify.specs import TINY, left_padded_batch, spec
from modbuild.weights.cli import main as weights_main

MODEL = "deepseek_v3"
ROOT = Path(__file__).resolve().parents[1]


# name -> (the generated line, its broken version)
MUTATIONS = {
    "mla-q-a-layernorm-skipped": (
        "self.q_b_proj(self.q_a_layernorm(self.q_a_proj(hidden_states)))",
        "self.q_b_proj(self.q_a_proj(hidden_states))",
    ),
    "mla-kv-a-layernorm-skipped": (
        "kv = self.kv_b_proj(self.kv_a_layernorm(latent))",
        "kv = self.kv_b_proj(latent)",
    ),
    "mla-rope-interleave-ignored": ("if self.config.rope_interleave:", "if False:"),
    "mla-yarn-softmax-mscale-ignored": (
        "self.scaling = self.scaling * mscale * mscale",
        "self.scaling = self.scaling",
    ),
    "routing-group-limit-ignored": ("config.topk_group,", "config.n_group,"),
    "routing-correction-bias-ignored": ("self.e_score_correction_bias,", "None,"),
    "shared-experts-dropped": (
        "return (routed + self.shared_experts(tokens)).reshape(hidden_states.shape)",
        "return routed.reshape(hidden_states.shape)",
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_each_new_block_broken_fails_the_hf_check(tmp_path, name):
    old, new = MUTATIONS[name]
    record = verify(MODEL, "hf", mutated(tmp_path, MODEL, "modeling", old, new))
    assert not record.passed
    assert record.metrics["logits"] > record.bounds["logits"], record.metrics


def test_plain_q_projection_matches_hf(tmp_path):
    """q_lora_rank = None: one q_proj instead of q_a_proj / q_a_layernorm / q_b_proj (the spec checks the other)."""
    assert spec(MODEL).config["q_lora_rank"] is not None
    net = hf_model(MODEL, q_lora_rank=None)
    ours = load_converted(net, MODEL, tmp_path)
    assert "q_proj" in dict(ours.deepseek_v3.layers[0].self_attn.named_children())
    record = Record(MODEL, "hf", bounds={"logits": 1e-4, "loss": 1e-5, "grads_rel": 1e-4, "decode_mismatch": 0.0})
    compare(ours, net, record)
    compare_decoding(ours, net, record)
    assert record.metrics["missing_params"] == 0
    assert record.passed, record.failures()


def _hf_selections(net: torch.nn.Module, batch: dict) -> list[torch.Tensor]:
    """The experts HF's routers pick for the batch's tokens, one [tokens, k] tensor per MoE layer (sorted)."""
    picks = []
    routers = [m for m in net.modules() if type(m).__name__ == "DeepseekV3TopkRouter"]
    hooks = [r.register_forward_hook(lambda _, __, out: picks.append(out[0].sort(-1)[0])) for r in routers]
    with torch.no_grad():
        net(**{k: torch.tensor(v) for k, v in batch.items() if k != "labels"})
    for hook in hooks:
        hook.remove()
    return picks


def test_check_config_makes_bias_and_group_limit_change_the_selection():
    net = hf_model(MODEL)
    config = net.config
    assert config.n_group > 1 and config.topk_group < config.n_group
    assert 0 < config.first_k_dense_replace < config.num_hidden_layers
    batch = left_padded_batch(TINY["vocab_size"])
    routers = [m for m in net.modules() if type(m).__name__ == "DeepseekV3TopkRouter"]
    assert all(r.e_score_correction_bias.abs().max() > 0 for r in routers)
    chosen = _hf_selections(net, batch)
    biases = [r.e_score_correction_bias.clone() for r in routers]
    for router in routers:
        router.e_score_correction_bias.zero_()
    assert any((a != b).any() for a, b in zip(chosen, _hf_selections(net, batch)))
    for router, bias in zip(routers, biases):
        router.e_score_correction_bias.copy_(bias)
        router.topk_group = router.n_group
    assert any((a != b).any() for a, b in zip(chosen, _hf_selections(net, batch)))


def test_yarn_factors_change_both_scales():
    from generated.deepseek_v3.modeling_deepseek_v3 import DeepseekV3ForCausalLM

    cls = DeepseekV3ForCausalLM
    model = cls(cls.config_class(**{**TINY, **spec(MODEL).config}))
    attention = model.deepseek_v3.layers[0].self_attn
    assert abs(attention.scaling / attention.qk_head_dim**-0.5 - 1) > 0.1
    assert abs(model.deepseek_v3.rotary_emb.attention_scaling - 1) > 0.01
    assert attention.v_head_dim != attention.qk_head_dim


def test_routing_matches_hf_router_where_masking_with_zero_matters():
    """Scores whose bias-corrected values are negative in the chosen groups: HF masks the other groups with 0.0, so
    its top-k picks masked experts over them; -inf masking would not."""
    config = transformers.DeepseekV3Config(
        hidden_size=8, n_routed_experts=8, n_group=4, topk_group=2, num_experts_per_tok=4, routed_scaling_factor=2.5
    )
    router = transformers.models.deepseek_v3.modeling_deepseek_v3.DeepseekV3TopkRouter(config)
    rng = np.random.default_rng(1)
    weight, tokens = rng.normal(0, 1, (8, 8)).astype("float32"), rng.normal(0, 1, (64, 8)).astype("float32")
    bias = np.where(np.arange(8) % 3 == 0, -0.2, -1.5).astype("float32")
    with torch.no_grad():
        router.weight.copy_(torch.tensor(weight))
        router.e_score_correction_bias.copy_(torch.tensor(bias))
        hf_idx, hf_w = router(torch.tensor(tokens))
    logits = paddle.matmul(paddle.to_tensor(tokens), paddle.to_tensor(weight), transpose_y=True)
    idx, w = sigmoid_topk_routing(logits, paddle.to_tensor(bias), 4, 2, 4, True, 2.5)
    order, hf_order = idx.numpy().argsort(-1), hf_idx.numpy().argsort(-1)
    np.testing.assert_array_equal(np.take_along_axis(idx.numpy(), order, -1), np.sort(hf_idx.numpy(), -1))
    np.testing.assert_allclose(
        np.take_along_axis(w.numpy(), order, -1), np.take_along_axis(hf_w.numpy(), hf_order, -1), rtol=1e-6
    )
    group_of = np.take_along_axis(idx.numpy(), order, -1) // 2
    assert (np.array([len(set(g)) for g in group_of]) > 2).any()  # a masked group's expert was chosen


def hf_checkpoint(tmp_path: Path, **config) -> tuple[torch.nn.Module, Path]:
    net = hf_model(MODEL, **config)
    net.save_pretrained(tmp_path / "hf", safe_serialization=True)
    return net, tmp_path / "hf"


def test_kv_cache_holds_what_hf_cache_holds(tmp_path):
    """Per layer: the keys after RoPE [.., heads, nope + rope] (the rope key in every head, de-interleaved) and the
    values [.., heads, v_head_dim], HF's DynamicCache contents up to the axis order."""
    net = hf_model(MODEL)
    ours = load_converted(net, MODEL, tmp_path)
    ids = left_padded_batch(TINY["vocab_size"])["input_ids"][1:]
    with torch.no_grad():
        theirs = net(torch.tensor(ids), use_cache=True).past_key_values.to_legacy_cache()
    with paddle.no_grad():
        mine = ours(input_ids=paddle.to_tensor(ids), use_cache=True, return_dict=True).past_key_values
    assert len(mine) == len(theirs) == net.config.num_hidden_layers
    for (key, value), (hf_key, hf_value) in zip(mine, theirs):
        np.testing.assert_allclose(key.numpy(), hf_key.numpy().transpose(0, 2, 1, 3), atol=1e-5)
        np.testing.assert_allclose(value.numpy(), hf_value.numpy().transpose(0, 2, 1, 3), atol=1e-5)
    assert mine[0][0].shape[-1] == net.config.qk_head_dim and mine[0][1].shape[-1] == net.config.v_head_dim


@pytest.mark.parametrize("q_lora_rank", [24, None])
def test_hf_saved_checkpoint_converts_both_ways_bit_exact(tmp_path, q_lora_rank):
    """HF's own config.json (head_dim and qk_head_dim beside qk_nope/qk_rope, pad_token_id left out) and weights, the correction bias (a
    buffer on both sides) included: hf2paddle then paddle2hf gives HF's tensors back bit for bit."""
    net, hf_dir = hf_checkpoint(tmp_path, q_lora_rank=q_lora_rank)
    written = json.loads((hf_dir / "config.json").read_text())
    assert written["head_dim"] == written["qk_rope_head_dim"]
    assert written["qk_head_dim"] == written["qk_nope_head_dim"] + written["qk_rope_head_dim"]
    assert "pad_token_id" not in written and "topk_method" not in written  # left out: at the default / not HF's
    paddle_dir, back_dir = tmp_path / "paddle", tmp_path / "back"
    assert weights_main(["hf2paddle", "--src", str(hf_dir), "--dst", str(paddle_dir), "--no-progress"]) == 0
    ours = from_pretrained(paddle_dir, dtype="float32")
    bias = ours.deepseek_v3.layers[1].mlp.gate.e_score_correction_bias
    assert bias.name not in {p.name for p in ours.parameters()}  # a buffer, as in HF
    assert "deepseek_v3.layers.1.mlp.gate.e_score_correction_bias" in ours.state_dict()
    assert weights_main(["paddle2hf", "--src", str(paddle_dir), "--dst", str(back_dir), "--no-progress"]) == 0
    original, back = load_file(hf_dir / "model.safetensors"), load_file(back_dir / "model.safetensors")
    assert set(original) == set(back)
    assert any(k.endswith("e_score_correction_bias") for k in original)
    for key, value in original.items():
        assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key
    again = transformers.AutoModelForCausalLM.from_pretrained(back_dir, attn_implementation="eager").eval()
    ids = torch.tensor(left_padded_batch(TINY["vocab_size"])["input_ids"][1:])
    with torch.no_grad():  # HF reloaded may sum its MoE in another order than the model in memory: ~1e-6
        np.testing.assert_allclose(again(ids).logits.numpy(), net(ids).logits.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"head_dim": 16}, r"head_dim \(16\) must equal qk_rope_head_dim \(8\)"),
        ({"num_key_value_heads": 2}, r"num_key_value_heads \(2\) must equal num_attention_heads \(4\)"),
        ({"n_group": 3}, r"n_group \(3\) must split n_routed_experts \(8\)"),
        ({"topk_group": 1, "num_experts_per_tok": 3}, r"num_experts_per_tok \(3\) exceeds the experts of topk_group"),
        ({"topk_method": "greedy"}, r"topk_method 'greedy' with scoring_func 'sigmoid' is unsupported"),
        ({"sequence_parallel": True, "tensor_parallel_degree": 2}, r"sequence_parallel is unsupported: MoE"),
    ],
)
def test_config_refuses_what_the_model_cannot_run(overrides, message):
    from generated.deepseek_v3.configuration_deepseek_v3 import DeepseekV3Config

    with pytest.raises(ValueError, match=message):
        DeepseekV3Config(**{**TINY, **spec(MODEL).config, **overrides})


def test_shared_rope_key_gradient_is_summed_over_tp_ranks(tmp_path):
    """The tp2 check of a copy whose rope key skips `replicated_input`: each rank's heads then give the replicated
    kv_a_proj_with_mqa only part of its gradient, and the check sees it. (The unbroken model's tp2 check passes.)"""
    from modbuild.verify.tp_check import record_from
    from modbuild.verify.tp_run import run_tp2

    shutil.copytree(ROOT / "generated" / MODEL, tmp_path / "generated" / MODEL)
    shutil.copy(ROOT / "generated" / "__init__.py", tmp_path / "generated" / "__init__.py")
    shutil.copytree(ROOT / "modular" / MODEL, tmp_path / "modular" / MODEL)  # the spec, beside `generated`
    modeling = tmp_path / "generated" / MODEL / f"modeling_{MODEL}.py"
    old = "k_rot = replicated_input(k_rot, self.config).reshape"
    assert modeling.read_text().count(old) == 1
    modeling.write_text(modeling.read_text().replace(old, "k_rot = k_rot.reshape"))
    result = run_tp2(MODEL, extra_env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    record = record_from(MODEL, result)
    assert not record.passed
    assert result["grad_max_rel"] > 0.1 and "kv_a_proj_with_mqa" in result["worst_param"]


def test_multi_token_prediction_layer_61_is_skipped_as_hf_skips_it(tmp_path, caplog):
    """DeepSeek-V3's released checkpoints carry the MTP module as `model.layers.61.*`, which HF's model does not load
    (`_keys_to_ignore_on_load_unexpected`): the converter skips those keys, saying why, and nothing else."""
    import logging

    from safetensors.numpy import save_file

    from modbuild.weights.convert import convert_hf_to_paddle

    _, hf_dir = hf_checkpoint(tmp_path)
    tensors = load_file(hf_dir / "model.safetensors")
    tensors["model.layers.61.enorm.weight"] = np.ones(TINY["hidden_size"], "float32")
    save_file(tensors, hf_dir / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.INFO, logger="modbuild.weights.convert"):
        convert_hf_to_paddle(hf_dir, tmp_path / "paddle")
    assert "skipped model.layers.61.enorm.weight: DeepSeek-V3's multi-token-prediction layer" in caplog.text
    stored = load_file(tmp_path / "paddle" / "model.safetensors")
    assert not any(".61." in key for key in stored) and len(stored) == len(tensors) - 1
