"""ERNIE 4.5 (dense) and ERNIE 4.5 MoE: checkpoints as HF's save_pretrained writes them, both ways bit-exact (the
gate-correction statistics, a buffer, included), the router aux loss against HF's, the check configs making each MoE feature
change the result, a broken copy of each new block failing the `hf` check, and the configs' refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mutation import mutated
from safetensors.numpy import load_file

from modbuild.models import from_pretrained
from modbuild.verify import verify
from modbuild.verify.hf_check import hf_model
from modbuild.verify.specs import TINY, left_padded_batch, spec
from modbuild.weights.cli import main as weights_main

MOE = "ernie4_5_moe"
# HF's defaults, as the released checkpoints have them: no biases, tied embeddings (save_pretrained omits the tie key);
# the MoE layout and routing sizes stay the check's.
RELEASED = {"use_bias": False, "tie_word_embeddings": True}


def _hf_checkpoint(tmp_path: Path, model: str) -> tuple[torch.nn.Module, dict]:
    net = hf_model(model, **RELEASED)
    net.save_pretrained(tmp_path / "hf", safe_serialization=True)
    return net, json.loads((tmp_path / "hf" / "config.json").read_text())


@pytest.mark.parametrize("model", ["ernie4_5", MOE])
def test_hf_saved_checkpoint_converts_both_ways_bit_exact(tmp_path, model):
    """HF's own config.json (no tie_word_embeddings key: true is PretrainedConfig's default) through the weights CLI, loaded
    by model_type: HF's logits, and paddle2hf gives HF's tensors back bit for bit, the statistics included."""
    net, written = _hf_checkpoint(tmp_path, model)
    assert "tie_word_embeddings" not in written and written["use_bias"] is False  # the tie key left out (its default)
    hf_dir, paddle_dir, back_dir = tmp_path / "hf", tmp_path / "paddle", tmp_path / "back"
    assert weights_main(["hf2paddle", "--src", str(hf_dir), "--dst", str(paddle_dir), "--no-progress"]) == 0
    ours = from_pretrained(paddle_dir, dtype="float32")
    for key in ("tie_word_embeddings", "use_bias", "moe_layer_end_index", "moe_layer_interval"):
        assert getattr(ours.config, key, None) == getattr(net.config, key, None), key
    # HF's MoE config has no head_dim (hidden / heads); the dense one's is 32 here
    assert ours.base_model.layers[0].self_attn.head_dim == net.model.layers[0].self_attn.head_dim
    batch = left_padded_batch(TINY["vocab_size"])
    with torch.no_grad():
        theirs = net(**{k: torch.tensor(v) for k, v in batch.items()}).logits.numpy()
    with paddle.no_grad():
        mine = ours(**{k: paddle.to_tensor(v) for k, v in batch.items()}, return_dict=True).logits.numpy()
    real = batch["attention_mask"].astype(bool)
    assert np.abs(mine[real] - theirs[real]).max() <= 1e-4

    assert weights_main(["paddle2hf", "--src", str(paddle_dir), "--dst", str(back_dir), "--no-progress"]) == 0
    original, back = load_file(hf_dir / "model.safetensors"), load_file(back_dir / "model.safetensors")
    assert set(original) == set(back)
    for key, value in original.items():
        assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key
    statistics = [k for k in original if k.endswith("moe_statics.e_score_correction_bias")]
    assert len(statistics) == (2 if model == MOE else 0)


def test_multi_token_prediction_weights_are_skipped_as_hf_skips_them(tmp_path, capsys):
    """A released MoE checkpoint also holds MTP weights (`model.mtp_*`), which HF's model ignores on load: the
    converter skips them, saying so, and converts the rest."""
    from safetensors.numpy import save_file

    _hf_checkpoint(tmp_path, MOE)
    tensors = load_file(tmp_path / "hf" / "model.safetensors")
    extra = {"model.mtp_linear_proj.0.weight": np.ones((64, 128), "float32")}
    save_file({**tensors, **extra}, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    src, dst = str(tmp_path / "hf"), str(tmp_path / "pd")
    assert weights_main(["hf2paddle", "--src", src, "--dst", dst, "--no-progress"]) == 0
    assert "model.mtp_linear_proj.0.weight: ERNIE 4.5's multi-token-prediction weights" in capsys.readouterr().err
    assert set(load_file(tmp_path / "pd" / "model.safetensors")).isdisjoint(extra)


def test_statistics_are_a_checkpoint_buffer_never_trained():
    """A persistent buffer (HF: a Parameter with requires_grad=False): in the state dict, not among the parameters,
    so no optimizer or loss touches it."""
    from generated.ernie4_5_moe.modeling_ernie4_5_moe import Ernie4_5_MoeForCausalLM as cls

    ours = cls(cls.config_class(**{**TINY, **spec(MOE).config}))
    name = "ernie4_5_moe.layers.1.mlp.moe_statics.e_score_correction_bias"
    assert name not in dict(ours.named_parameters())
    assert ours.state_dict()[name].shape == [1, ours.config.moe_num_experts]
    assert name in {m.target_name for m in cls._get_name_mappings(ours.config)}


def test_router_aux_loss_matches_hf(tmp_path):
    """With output_router_logits: HF's aux loss (Mixtral's, over the uncorrected probabilities of the MoE layers
    only) and HF's total loss, LM loss + router_aux_loss_coef x aux."""
    net = hf_model(MOE, output_router_logits=True, router_aux_loss_coef=0.5)
    net.save_pretrained(tmp_path / "hf", safe_serialization=True)
    assert (
        weights_main(["hf2paddle", "--src", str(tmp_path / "hf"), "--dst", str(tmp_path / "pd"), "--no-progress"]) == 0
    )
    ours = from_pretrained(tmp_path / "pd", dtype="float32")
    batch = left_padded_batch(TINY["vocab_size"])
    with torch.no_grad():
        theirs = net(**{k: torch.tensor(v) for k, v in batch.items()})
    with paddle.no_grad():
        mine = ours(**{k: paddle.to_tensor(v) for k, v in batch.items()}, return_dict=True)
    assert len(mine.router_logits) == len(theirs.router_logits) == 2  # layers 1 and 3
    assert abs(float(mine.aux_loss) - float(theirs.aux_loss)) <= 1e-6
    assert abs(float(mine.loss) - float(theirs.loss)) <= 1e-5
    assert float(theirs.aux_loss) > 1.0  # the aux loss, not zero, reaches the total


def _hf_routing(net: torch.nn.Module, batch: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(router probabilities [tokens, experts], correction bias [1, experts]) of each HF MoE layer for the batch."""
    blocks = [m for m in net.modules() if type(m).__name__ == "Ernie4_5_MoeSparseMoeBlock"]
    logits = []
    hooks = [b.gate.register_forward_hook(lambda _, __, out: logits.append(out)) for b in blocks]
    with torch.no_grad():
        net(**{k: torch.tensor(v) for k, v in batch.items() if k != "labels"})
    for hook in hooks:
        hook.remove()
    return [(lg.softmax(-1), b.moe_statics.e_score_correction_bias) for lg, b in zip(logits, blocks)]


def test_check_config_makes_layout_bias_and_norm_min_matter():
    """The hf check's model: dense layers, then MoE every second layer up to moe_layer_end_index; the correction bias
    changes which experts are chosen; moe_norm_min replaces the sum of some tokens' weights, not all."""
    net = hf_model(MOE)
    kinds = [type(layer.mlp).__name__ for layer in net.model.layers]
    assert kinds == ["Ernie4_5_MoeMLP", "Ernie4_5_MoeSparseMoeBlock"] * 2 + ["Ernie4_5_MoeMLP"] * 2
    assert (net.config.moe_layer_end_index + 2) % net.config.moe_layer_interval == 0  # layer 5 dense only by the end
    k, norm_min = net.config.moe_k, net.config.moe_norm_min
    changed, clamped = [], []
    for probs, bias in _hf_routing(net, left_padded_batch(TINY["vocab_size"])):
        chosen = (probs + bias).topk(k, -1).indices
        changed.append((chosen.sort(-1).values != probs.topk(k, -1).indices.sort(-1).values).any(-1))
        clamped.append(probs.gather(-1, chosen).sum(-1) < norm_min)
    changed, clamped = torch.cat(changed), torch.cat(clamped)
    assert changed.any() and clamped.any() and not clamped.all()


# name -> (model, file kind, the generated text, its broken version)
MUTATIONS = {
    "correction-bias-ignored": (
        MOE,
        "modeling",
        "paddle.topk(probs + self.moe_statics.e_score_correction_bias, self.top_k)",
        "paddle.topk(probs, self.top_k)",
    ),
    "correction-bias-in-the-weights": (
        MOE,
        "modeling",
        "weights = paddle.take_along_axis(probs, indices, axis=1)",
        "weights = paddle.take_along_axis(probs + self.moe_statics.e_score_correction_bias, indices, axis=1)",
    ),
    "norm-min-ignored": (
        MOE,
        "modeling",
        "weights / weights.sum(-1, keepdim=True).clip(min=self.norm_min)",
        "weights / weights.sum(-1, keepdim=True)",
    ),
    "shared-experts-dropped": (MOE, "modeling", "output = output + self.shared_experts(tokens)", "output = output"),
    "layer-interval-ignored": (
        MOE,
        "configuration",
        "self.moe_layer_interval = moe_layer_interval",
        "self.moe_layer_interval = 1",
    ),
    "rotation-in-halves": ("ernie4_5", "modeling", "interleaved = True", "interleaved = False"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_broken_block_fails_the_hf_check(tmp_path, name):
    model, kind, old, new = MUTATIONS[name]
    record = verify(model, "hf", mutated(tmp_path, model, kind, old, new))
    assert not record.error, record.error
    assert not record.passed, record.metrics


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"use_bias": True, "tie_word_embeddings": True}, r"use_bias=True with tie_word_embeddings=True"),
        ({"moe_layer_interval": 0}, r"moe_layer_interval \(0\) must be >= 1"),
        ({"moe_k": 9}, r"moe_k \(9\) in 1..moe_num_experts \(8\)"),
        ({"sequence_parallel": True, "tensor_parallel_degree": 2}, r"sequence_parallel is unsupported with MoE"),
    ],
)
def test_moe_config_refuses_what_the_model_cannot_run(overrides, message):
    from generated.ernie4_5_moe.configuration_ernie4_5_moe import Ernie4_5_MoeConfig

    with pytest.raises(ValueError, match=message):
        Ernie4_5_MoeConfig(**{**TINY, **spec(MOE).config, **overrides})
