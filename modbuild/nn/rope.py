"""RoPE inverse frequencies for each ``rope_scaling["rope_type"]`` (HF's ``modeling_rope_utils``), and GPT-J's
interleaved partial rotation (``rotate_every_two``: features 2i and 2i+1 form the pair rotated by frequency i)."""

from __future__ import annotations

import math

import paddle


def inverse_frequencies(dim: int, base: float) -> paddle.Tensor:
    """``1 / base^(2i / dim)`` in float32, from an int64 range as HF computes it."""
    return 1.0 / (base ** (paddle.arange(0, dim, 2, dtype="int64").astype("float32") / dim))


def _compute_default_rope_parameters(config) -> tuple[paddle.Tensor, float]:
    return inverse_frequencies(config.head_dim, config.rope_theta), 1.0


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


def rotate_every_two(x: paddle.Tensor) -> paddle.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) along the last axis."""
    return paddle.stack([-x[..., 1::2], x[..., ::2]], axis=-1).flatten(-2)


def apply_interleaved_rotary(x: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor) -> paddle.Tensor:
    """Rotate the first ``cos.shape[-1]`` features of ``x`` pairwise (``rotate_every_two``); the rest pass through.
    ``cos``/``sin`` hold each frequency twice in a row (``repeat_interleave``) and broadcast against ``x``."""
    rotary_dim = cos.shape[-1]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    return paddle.concat([x_rot * cos + rotate_every_two(x_rot) * sin, x_pass], axis=-1)
