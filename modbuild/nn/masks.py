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
