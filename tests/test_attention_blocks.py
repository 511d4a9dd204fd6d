"""The attention blocks Gemma 2 and 3 brought to modbuild/nn, each against HF transformers 4.55.4's own function:
softcapping (``attention.soft_cap``, read by the attention functions), the ``query_pre_attn_scalar`` scale, per-layer
attention types (``masks``: layer types, a sliding window per layer over the KV cache, a RoPE per layer type)."""

from __future__ import annotations

import types

import numpy as np
import paddle
import pytest
import torch
import transformers
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.models.gemma2 import modeling_gemma2 as hf_gemma2
from transformers.models.gemma3 import modeling_gemma3 as hf_gemma3

from modbuild.nn.attention import eager_attention_forward, sdpa_attention_forward, soft_cap
from modbuild.nn.masks import (
    RotaryPerLayerType,
    apply_sliding_window,
    causal_mask,
    check_layer_types,
    default_layer_types,
    layer_position_embeddings,
    layer_sliding_window,
)

HEADS, KV_HEADS, HEAD_DIM = 4, 2, 8


def hf_masks(past: int, seq: int, padding: np.ndarray, window: int) -> dict[str, np.ndarray]:
    """HF's additive masks for each layer type, [b, 1, seq, past + seq], over a cache holding ``past`` tokens."""
    config = transformers.Gemma2Config(
        num_hidden_layers=2, sliding_window=window, hidden_size=16, num_attention_heads=HEADS, head_dim=HEAD_DIM
    )
    config._attn_implementation = "eager"
    cache = None
    if past:
        cache = DynamicCache()
        for layer in range(2):
            cache.update(torch.zeros(1, KV_HEADS, past, HEAD_DIM), torch.zeros(1, KV_HEADS, past, HEAD_DIM), layer)
    kwargs = {
        "config": config,
        "input_embeds": torch.zeros(padding.shape[0], seq, 16),
        "attention_mask": torch.tensor(padding),
        "cache_position": torch.arange(past, past + seq),
        "past_key_values": cache,
        "position_ids": None,
    }
    return {
        "full_attention": create_causal_mask(**kwargs).numpy(),
        "sliding_attention": create_sliding_window_causal_mask(**kwargs).numpy(),
    }


def padding_mask(batch: int, length: int, pads: int) -> np.ndarray:
    mask = np.ones((batch, length), dtype="int64")
    mask[0, :pads] = 0  # the first row left-padded, as in generation
    return mask


# (past, seq): a prompt longer than the window, and decoding one token with the cache past the window.
CASES = [(0, 9), (7, 1), (5, 3)]


@pytest.mark.parametrize(("past", "seq"), CASES)
def test_masks_per_layer_type_match_hf_over_the_kv_cache(past, seq):
    window, padding = 3, padding_mask(2, past + seq, 2)
    expected = hf_masks(past, seq, padding, window)
    full = causal_mask(paddle.to_tensor(padding), 2, seq, past)
    ours = {"full_attention": full, "sliding_attention": apply_sliding_window(full, window)}
    for kind in ("full_attention", "sliding_attention"):
        # Allowed where the additive mask is 0; a row with nothing allowed (padding) may differ in value only.
        np.testing.assert_array_equal(ours[kind].numpy() == 0, expected[kind] == 0, err_msg=kind)
    assert (expected["sliding_attention"] != expected["full_attention"]).any()  # the window is active here


def qkv(past: int, seq: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.normal(0, 1.5, (2, seq, HEADS, HEAD_DIM)).astype("float32")
    k = rng.normal(0, 1.5, (2, past + seq, KV_HEADS, HEAD_DIM)).astype("float32")
    v = rng.normal(0, 1.0, (2, past + seq, KV_HEADS, HEAD_DIM)).astype("float32")
    return q, k, v


def attention_pair(past: int, seq: int, softcap: float | None, window: int | None, scalar: float, function):
    """(ours, HF's gemma2 eager attention) on the same q/k/v [b, s, h, d] and the layer type's mask."""
    q, k, v = qkv(past, seq)
    padding = padding_mask(2, past + seq, 2)
    scaling = scalar**-0.5
    module = types.SimpleNamespace(
        num_key_value_groups=HEADS // KV_HEADS, training=False, attn_logit_softcapping=softcap, head_dim=HEAD_DIM
    )
    mask = causal_mask(paddle.to_tensor(padding), 2, seq, past)
    ours, _ = function(module, *(paddle.to_tensor(t) for t in (q, k, v)), mask, scaling=scaling, sliding_window=window)
    hf_mask = hf_masks(past, seq, padding, window or 10**6)["sliding_attention" if window else "full_attention"]
    theirs, _ = hf_gemma2.eager_attention_forward(
        module,
        *(torch.tensor(t).transpose(1, 2) for t in (q, k, v)),
        torch.tensor(hf_mask),
        scaling=scaling,
        softcap=softcap,
    )
    return ours.numpy(), theirs.numpy(), padding[:, past:].astype(bool)


@pytest.mark.parametrize("function", [eager_attention_forward, sdpa_attention_forward], ids=["eager", "sdpa"])
@pytest.mark.parametrize(("past", "seq"), CASES)
@pytest.mark.parametrize("softcap", [None, 1.5])
@pytest.mark.parametrize("window", [None, 3])
def test_attention_with_softcap_scalar_and_window_matches_hf(function, past, seq, softcap, window):
    ours, theirs, real = attention_pair(past, seq, softcap, window, scalar=20.0, function=function)
    np.testing.assert_allclose(ours[real], theirs[real], atol=2e-6)


def test_softcap_and_scalar_change_the_output():
    """The cases above would pass with the features off if they made no difference: they do."""
    base, _, real = attention_pair(0, 9, None, 3, scalar=HEAD_DIM, function=eager_attention_forward)
    capped, _, _ = attention_pair(0, 9, 1.5, 3, scalar=HEAD_DIM, function=eager_attention_forward)
    rescaled, _, _ = attention_pair(0, 9, None, 3, scalar=20.0, function=eager_attention_forward)
    assert np.abs(capped - base)[real].max() > 1e-2 and np.abs(rescaled - base)[real].max() > 1e-2


def test_soft_cap_is_hf_final_logit_softcapping():
    logits = np.random.default_rng(0).normal(0, 20, (2, 5, 11)).astype("float32")
    cap = 30.0
    # HF's Gemma2ForCausalLM.forward: logits / cap, tanh, * cap.
    expected = torch.tanh(torch.tensor(logits) / cap) * cap
    np.testing.assert_allclose(soft_cap(paddle.to_tensor(logits), cap).numpy(), expected.numpy(), atol=1e-5)
    np.testing.assert_array_equal(soft_cap(paddle.to_tensor(logits), None).numpy(), logits)


@pytest.mark.parametrize("layers", [1, 2, 5, 7, 12])
@pytest.mark.parametrize("pattern", [1, 2, 3, 6])
def test_default_layer_types_match_hf(layers, pattern):
    hf = transformers.Gemma3TextConfig(num_hidden_layers=layers, sliding_window_pattern=pattern)
    assert default_layer_types(layers, pattern) == hf.layer_types
    if pattern == 2:
        assert default_layer_types(layers, 2) == transformers.Gemma2Config(num_hidden_layers=layers).layer_types


@pytest.mark.parametrize(
    ("layer_types", "message"),
    [
        (["sliding_attention"], r"one type per layer \(2\)"),
        (["full_attention", "local"], r"layer_types\[1\] is 'local'"),
        ("full_attention", "one type per layer"),
    ],
)
def test_bad_layer_types_are_refused_naming_the_entry(layer_types, message):
    with pytest.raises(ValueError, match=message):
        check_layer_types(layer_types, 2)
    with pytest.raises(ValueError, match="sliding_window_pattern must be a positive integer"):
        default_layer_types(2, 0)


def test_layer_sliding_window_follows_the_layer_type():
    config = types.SimpleNamespace(sliding_window=5, layer_types=["sliding_attention", "full_attention"])
    assert [layer_sliding_window(config, i) for i in range(2)] == [5, None]


def test_rotary_per_layer_type_matches_hf_gemma3():
    """The full layers' RoPE (rope_theta, linear rope_scaling) and the sliding ones' (rope_local_base_freq)."""
    from generated.gemma3.modeling_gemma3 import Gemma3Config, Gemma3Model

    values = {
        "vocab_size": 32,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "rope_theta": 5000.0,
        "rope_local_base_freq": 50.0,
        "rope_scaling": {"rope_type": "linear", "factor": 3.0},
    }
    hf = hf_gemma3.Gemma3TextModel(transformers.Gemma3TextConfig(**values))
    rotary = Gemma3Model(Gemma3Config(**values)).rotary_emb
    assert isinstance(rotary, RotaryPerLayerType)
    positions = np.array([[0, 0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5, 6, 7]], dtype="int64")
    x = np.zeros((2, 8, 32), dtype="float32")
    ours = rotary(paddle.to_tensor(x), paddle.to_tensor(positions))
    expected = {
        "full_attention": hf.rotary_emb(torch.tensor(x), torch.tensor(positions)),
        "sliding_attention": hf.rotary_emb_local(torch.tensor(x), torch.tensor(positions)),
    }
    for kind, (cos, sin) in expected.items():
        got = layer_position_embeddings(ours, kind)
        np.testing.assert_allclose(got[0].numpy(), cos.numpy(), atol=1e-6, err_msg=kind)
        np.testing.assert_allclose(got[1].numpy(), sin.numpy(), atol=1e-6, err_msg=kind)
    assert not np.allclose(ours["full_attention"][0].numpy(), ours["sliding_attention"][0].numpy())
    pair = ours["full_attention"]
    assert layer_position_embeddings(pair, "sliding_attention") is pair  # one RoPE for every type
