"""RoPE, model-agnostic, as HF 4.55.4 keeps it in ``modeling_rope_utils``.

- ``ROPE_INIT_FUNCTIONS``: ``(inv_freq, attention_scaling)`` for each ``rope_scaling["rope_type"]`` (default, linear,
  dynamic, yarn, longrope, llama3), over the first ``partial_rotary_factor`` of each head (``rope_dim``).
- ``RotaryEmbedding``: HF's ``<Model>RotaryEmbedding`` with its ``dynamic_rope_update``: dynamic NTK grows the base
  with the longest position seen, longrope switches to the long factors past ``original_max_position_embeddings``.
  cos/sin come in halves layout (``[f, f]``, for ``rotate_half``) or interleaved (``f0 f0 f1 f1 ...``, for
  ``rotate_every_two``: GPT-J, GLM), already multiplied by yarn's / longrope's attention scaling.
- ``apply_rotary``: rotate the first ``cos.shape[-1]`` features of each head, pass the rest through.
"""

from __future__ import annotations

import math
from typing import ClassVar

import paddle
from paddle import nn


def inverse_frequencies(dim: int, base: float) -> paddle.Tensor:
    """``1 / base^(2i / dim)`` in float32, from an int64 range as HF computes it."""
    return 1.0 / (base ** (paddle.arange(0, dim, 2, dtype="int64").astype("float32") / dim))


def rope_dim(config) -> int:
    """Features rotated per head: ``int(head_dim * partial_rotary_factor)`` (HF reads the factor when present)."""
    factor = config.partial_rotary_factor if hasattr(config, "partial_rotary_factor") else 1.0
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return int(head_dim * factor)


def _compute_default_rope_parameters(config, seq_len: int | None = None) -> tuple[paddle.Tensor, float]:
    return inverse_frequencies(rope_dim(config), config.rope_theta), 1.0


def _compute_linear_scaling_rope_parameters(config, seq_len: int | None = None) -> tuple[paddle.Tensor, float]:
    inv_freq, attention_factor = _compute_default_rope_parameters(config)
    return inv_freq / config.rope_scaling["factor"], attention_factor


def _compute_dynamic_ntk_parameters(config, seq_len: int | None = None) -> tuple[paddle.Tensor, float]:
    """NTK-aware base growth for sequences past ``max_position_embeddings`` (none below it)."""
    dim, max_positions = rope_dim(config), config.max_position_embeddings
    factor = config.rope_scaling["factor"]
    seq_len = max_positions if seq_len is None else max(seq_len, max_positions)
    base = config.rope_theta * ((factor * seq_len / max_positions) - (factor - 1)) ** (dim / (dim - 2))
    return inverse_frequencies(dim, base), 1.0


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn_attention_factor(scaling: dict, factor: float) -> float:
    if scaling.get("attention_factor") is not None:
        return scaling["attention_factor"]
    mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
    if mscale and mscale_all_dim:
        return float(_yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim))
    return _yarn_mscale(factor)


def _yarn_correction_range(scaling: dict, dim: int, base: float, max_positions: int) -> tuple[float, float]:
    """The dimensions between which yarn ramps from extrapolation (fast) to interpolation (slow)."""

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(max_positions / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low = correction_dim(scaling.get("beta_fast") or 32)
    high = correction_dim(scaling.get("beta_slow") or 1)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, dim - 1)


def _compute_yarn_parameters(config, seq_len: int | None = None) -> tuple[paddle.Tensor, float]:
    scaling, base, dim = config.rope_scaling, config.rope_theta, rope_dim(config)
    factor = scaling["factor"]
    original = scaling.get("original_max_position_embeddings")
    if original is not None:  # HF derives the factor from the two lengths when the original is given
        factor = config.max_position_embeddings / original
    else:
        original = config.max_position_embeddings
    attention_factor = _yarn_attention_factor(scaling, factor)

    low, high = _yarn_correction_range(scaling, dim, base, original)
    high = high + 0.001 if low == high else high  # HF's guard against a zero-width ramp
    ramp = ((paddle.arange(dim // 2, dtype="float32") - low) / (high - low)).clip(0, 1)
    pos_freqs = base ** (paddle.arange(0, dim, 2, dtype="int64").astype("float32") / dim)
    extrapolation = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, attention_factor


def _compute_longrope_parameters(config, seq_len: int | None = None) -> tuple[paddle.Tensor, float]:
    """Phi-3's per-frequency factors: the short ones up to ``original_max_position_embeddings``, the long past it."""
    scaling, dim = config.rope_scaling, rope_dim(config)
    factor, attention_factor = scaling.get("factor"), scaling.get("attention_factor")
    if hasattr(config, "original_max_position_embeddings"):
        original = config.original_max_position_embeddings
        factor = config.max_position_embeddings / original
    else:
        original = config.max_position_embeddings
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    ext_factors = scaling["long_factor"] if seq_len and seq_len > original else scaling["short_factor"]
    ext_factors = paddle.to_tensor(ext_factors, dtype="float32")
    exponents = paddle.arange(0, dim, 2, dtype="int64").astype("float32") / dim
    return 1.0 / (ext_factors * config.rope_theta**exponents), attention_factor


def _compute_llama3_parameters(config, seq_len: int | None = None) -> tuple[paddle.Tensor, float]:
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
    "dynamic": _compute_dynamic_ntk_parameters,
    "yarn": _compute_yarn_parameters,
    "longrope": _compute_longrope_parameters,
    "llama3": _compute_llama3_parameters,
}


def rope_type(config) -> str:
    """``rope_scaling["rope_type"]`` (older configs: ``"type"``); ``"default"`` without ``rope_scaling``."""
    scaling = getattr(config, "rope_scaling", None)
    if not isinstance(scaling, dict):
        return "default"
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in ROPE_INIT_FUNCTIONS:
        raise ValueError(f"rope_scaling: unknown rope_type {kind!r} (known: {', '.join(ROPE_INIT_FUNCTIONS)})")
    return kind


# Types whose frequencies follow the positions of each call: only a rotary embedding that updates them
# (``RotaryEmbedding``, as HF's ``dynamic_rope_update``) computes them right.
POSITION_DEPENDENT = ("dynamic", "longrope")


def compute_rope_parameters(
    config, seq_len: int | None = None, *, updated: bool = False
) -> tuple[paddle.Tensor, float]:
    """``(inv_freq, attention_scaling)`` for ``config.rope_scaling["rope_type"]`` (default: plain RoPE).

    A caller that computes the frequencies once (Llama's rotary embedding) is refused a position-dependent type,
    which would be right only up to ``max_position_embeddings``; ``updated=True`` says the caller recomputes."""
    kind = rope_type(config)
    if kind in POSITION_DEPENDENT and not updated:
        raise ValueError(
            f"rope_scaling: rope_type {kind!r} recomputes its frequencies from each call's positions, and this "
            "model's rotary embedding computes them once (modbuild.nn.rope.RotaryEmbedding does it as HF does)"
        )
    return ROPE_INIT_FUNCTIONS[kind](config, seq_len)


def update_frequencies(layer: nn.Layer, position_ids: paddle.Tensor) -> None:
    """HF's ``dynamic_rope_update`` on a ``RotaryEmbedding``: recompute ``inv_freq`` for the positions of this call."""
    seq_len = int(position_ids.max()) + 1
    config = layer.config
    if "dynamic" in layer.rope_type:
        if seq_len > layer.max_seq_len_cached:  # growth
            layer.inv_freq, layer.attention_scaling = compute_rope_parameters(config, seq_len, updated=True)
            layer.max_seq_len_cached = seq_len
        if seq_len < layer.original_max_seq_len < layer.max_seq_len_cached:  # back to the original scale
            layer.inv_freq, layer.max_seq_len_cached = layer.original_inv_freq, layer.original_max_seq_len
    elif layer.rope_type == "longrope":
        original = getattr(config, "original_max_position_embeddings", config.max_position_embeddings)
        if seq_len > original:
            if layer.long_inv_freq is None:
                layer.long_inv_freq, _ = compute_rope_parameters(config, original + 1, updated=True)
            layer.inv_freq = layer.long_inv_freq
        else:
            layer.inv_freq = layer.original_inv_freq


class RotaryEmbedding(nn.Layer):
    """cos and sin for ``position_ids``, each [batch, seq, rope_dim]; ``interleaved`` picks the layout."""

    interleaved: ClassVar[bool] = False

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.rope_type = rope_type(config)
        self.max_seq_len_cached = self.original_max_seq_len = config.max_position_embeddings
        inv_freq, self.attention_scaling = compute_rope_parameters(config, updated=True)
        self.register_buffer("inv_freq", inv_freq, persistable=False)
        self.original_inv_freq, self.long_inv_freq = inv_freq, None

    @paddle.no_grad()
    def forward(self, x: paddle.Tensor, position_ids: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        if self.rope_type in ("dynamic", "longrope"):  # the others never change with the positions
            update_frequencies(self, position_ids)
        freqs = position_ids.astype("float32").unsqueeze(-1) * self.inv_freq
        if self.interleaved:
            emb = freqs.repeat_interleave(2, axis=-1)
        else:
            emb = paddle.concat([freqs, freqs], axis=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.astype(x.dtype), sin.astype(x.dtype)


def rotate_half(x: paddle.Tensor) -> paddle.Tensor:
    """(x1, x2) -> (-x2, x1), halves of the last axis."""
    x1, x2 = x.chunk(2, axis=-1)
    return paddle.concat([-x2, x1], axis=-1)


def rotate_every_two(x: paddle.Tensor) -> paddle.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) along the last axis."""
    return paddle.stack([-x[..., 1::2], x[..., ::2]], axis=-1).flatten(-2)


def apply_rotary(x: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor, interleaved: bool = False) -> paddle.Tensor:
    """Rotate the first ``cos.shape[-1]`` features of ``x`` (in halves, or pairwise when ``interleaved``); the
    rest pass through. ``cos``/``sin`` broadcast against ``x``."""
    rotate = rotate_every_two if interleaved else rotate_half
    rotary_dim = cos.shape[-1]
    if rotary_dim == x.shape[-1]:
        return x * cos + rotate(x) * sin
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    return paddle.concat([x_rot * cos + rotate(x_rot) * sin, x_pass], axis=-1)


def apply_interleaved_rotary(x: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor) -> paddle.Tensor:
    """GPT-J's partial rotation: ``apply_rotary(..., interleaved=True)``. ``cos``/``sin`` hold each frequency twice
    in a row (``repeat_interleave``)."""
    return apply_rotary(x, cos, sin, interleaved=True)
