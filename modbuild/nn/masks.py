"""Attention masks and default positions: causal ones for decoder-only models with left padding (HF's
``masking_utils``), and the padding mask of an encoder.

Masks are additive float32 [batch, 1, q_len, kv_len]: 0 where a query may attend, the dtype's minimum elsewhere.
"""

from __future__ import annotations

import paddle


def default_position_ids(
    attention_mask: paddle.Tensor | None, batch_size: int, seq_length: int, past_length: int
) -> paddle.Tensor:
    """Real tokens count 0, 1, ... from the first unpadded one (left padding as in HF generation)."""
    if attention_mask is None:
        return paddle.arange(past_length, past_length + seq_length).expand([batch_size, seq_length])
    position_ids = (attention_mask.astype("int64").cumsum(-1) - 1).clip(min=0)
    return position_ids[:, -seq_length:]


def causal_mask(
    attention_mask: paddle.Tensor | None, batch_size: int, seq_length: int, past_length: int
) -> paddle.Tensor:
    """2-D padding mask [b, past+seq] (1 = real) -> additive fp32 causal mask [b, 1, seq, past+seq]."""
    kv_length = past_length + seq_length
    query_pos = paddle.arange(past_length, kv_length).unsqueeze(-1)
    allowed = (paddle.arange(kv_length) <= query_pos).expand([batch_size, 1, seq_length, kv_length])
    if attention_mask is not None:
        allowed = paddle.logical_and(allowed, attention_mask.astype("bool")[:, None, None, :])
    return paddle.where(allowed, 0.0, paddle.finfo(paddle.float32).min).astype("float32")


def apply_sliding_window(attention_mask: paddle.Tensor, sliding_window: int) -> paddle.Tensor:
    """Also mask keys ``sliding_window`` or more positions behind their query (HF: q - k < window)."""
    q_len, kv_len = attention_mask.shape[-2:]
    distance = paddle.arange(kv_len - q_len, kv_len).unsqueeze(-1) - paddle.arange(kv_len)
    return paddle.where(distance < sliding_window, attention_mask, paddle.finfo(attention_mask.dtype).min)


def padding_mask(attention_mask: paddle.Tensor | None, batch_size: int, seq_length: int) -> paddle.Tensor:
    """Bidirectional attention (an encoder's): 2-D padding mask [b, seq] (1 = real) -> additive fp32 [b, 1, 1, seq]."""
    if attention_mask is None:
        return paddle.zeros([batch_size, 1, 1, seq_length], dtype="float32")
    allowed = attention_mask.astype("bool")[:, None, None, :]
    return paddle.where(allowed, 0.0, paddle.finfo(paddle.float32).min).astype("float32")


# Per-layer attention types (HF's ``config.layer_types``): each layer attends to every earlier key, or to a window.
LAYER_TYPES = ("full_attention", "sliding_attention")


def default_layer_types(num_layers: int, pattern: int) -> list[str]:
    """Every ``pattern``-th layer full, the others sliding (HF's Gemma 2: pattern 2; Gemma 3: 6)."""
    if not isinstance(pattern, int) or pattern < 1:
        raise ValueError(f"sliding_window_pattern must be a positive integer, not {pattern!r}")
    return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(num_layers)]


def check_layer_types(layer_types: list[str], num_layers: int) -> list[str]:
    """``layer_types`` itself, once it names one known type per layer (else a ValueError naming the entry)."""
    if not isinstance(layer_types, (list, tuple)) or len(layer_types) != num_layers:
        raise ValueError(f"layer_types must list one type per layer ({num_layers}), not {layer_types!r}")
    for index, kind in enumerate(layer_types):
        if kind not in LAYER_TYPES:
            raise ValueError(f"layer_types[{index}] is {kind!r}; known: {', '.join(LAYER_TYPES)}")
    return list(layer_types)


def layer_sliding_window(config, layer_idx: int) -> int | None:
    """The window of layer ``layer_idx`` (``config.sliding_window``) if its type is sliding, else None (full)."""
    return config.sliding_window if config.layer_types[layer_idx] == "sliding_attention" else None


def layer_position_embeddings(
    position_embeddings: tuple[paddle.Tensor, paddle.Tensor] | dict, layer_type: str
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """The (cos, sin) a layer of ``layer_type`` uses: a model with a RoPE per type (``RotaryPerLayerType``) passes
    a dict by type, one with a single RoPE the pair itself."""
    return position_embeddings[layer_type] if isinstance(position_embeddings, dict) else position_embeddings


class RotaryPerLayerType(paddle.nn.Layer):
    """One rotary embedding per layer type (Gemma 3: the global RoPE for full layers, a local base for sliding
    ones); ``forward`` returns ``{layer_type: (cos, sin)}`` for ``layer_position_embeddings``."""

    def __init__(self, rotary_by_type: dict[str, paddle.nn.Layer]):
        super().__init__()
        self.rotary_by_type = paddle.nn.LayerDict(rotary_by_type)

    def forward(self, x: paddle.Tensor, position_ids: paddle.Tensor) -> dict:
        return {kind: rotary(x, position_ids) for kind, rotary in self.rotary_by_type.items()}
