"""RoPE inverse frequencies for each ``rope_scaling["rope_type"]`` (HF's ``modeling_rope_utils``)."""

from __future__ import annotations

import math

import paddle


def _compute_default_rope_parameters(config) -> tuple[paddle.Tensor, float]:
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (paddle.arange(0, dim, 2, dtype="int64").astype("float32") / dim))
    return inv_freq, 1.0


def _compute_linear_scaling_rope_parameters(config) -> tuple[paddle.Tensor, float]:
    inv_freq, attention_factor = _compute_default_rope_parameters(config)
    return inv_freq / config.rope_scaling["factor"], attention_factor


def _compute_llama3_parameters(config) -> tuple[paddle.Tensor, float]:
    inv_freq, attention_factor = _compute_default_rope_parameters(config)
    scaling = config.rope_scaling
    factor, low_freq_factor, high_freq_factor = (
        scaling["factor"],
        scaling["low_freq_factor"],
        scaling["high_freq_factor"],
    )
    old_context_len = scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor

    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths are slowed by `factor`, short ones kept, and the band between is interpolated.
    inv_freq_long = paddle.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_long / factor + smooth_factor * inv_freq_long
    is_medium_freq = paddle.logical_and(wavelen >= high_freq_wavelen, wavelen <= low_freq_wavelen)
    return paddle.where(is_medium_freq, smoothed_inv_freq, inv_freq_long), attention_factor


ROPE_INIT_FUNCTIONS = {
    "default": _compute_default_rope_parameters,
    "linear": _compute_linear_scaling_rope_parameters,
    "llama3": _compute_llama3_parameters,
}


def compute_rope_parameters(config) -> tuple[paddle.Tensor, float]:
    """``(inv_freq, attention_scaling)`` for ``config.rope_scaling["rope_type"]`` (default: plain RoPE)."""
    rope_type = (config.rope_scaling or {}).get("rope_type", "default")
    return ROPE_INIT_FUNCTIONS[rope_type](config)
