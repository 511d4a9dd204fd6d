"""Attention functions: eager and paddle's fused SDPA, chosen by ``config.use_flash_attention``.

Both take q [b, q_len, heads, d], k/v [b, kv_len, kv_heads, d] (grouped-query heads are repeated as needed), an
additive fp32 mask [b, 1, q_len, kv_len] (``masks.causal_mask``) and an optional sliding window, and return the
output [b, q_len, heads, d] with the attention weights (eager) or None (SDPA). ``module`` is the attention layer:
its ``num_key_value_groups`` and ``training`` are read, and its ``attn_logit_softcapping`` where it has one (Gemma 2:
the scaled logits are capped with ``soft_cap`` before the mask; SDPA cannot, so that layer runs eagerly).
"""

from __future__ import annotations

from collections.abc import Callable

import paddle
import paddle.nn.functional as F
from paddle import nn

from modbuild.nn.masks import apply_sliding_window


def repeat_kv(hidden_states: paddle.Tensor, n_rep: int) -> paddle.Tensor:
    """[batch, seq, kv_heads, head_dim] -> [batch, seq, kv_heads * n_rep, head_dim]; head i reads kv head i // n_rep."""
    if n_rep == 1:
        return hidden_states
    batch, seq, kv_heads, head_dim = hidden_states.shape
    hidden_states = hidden_states.unsqueeze(3).expand([batch, seq, kv_heads, n_rep, head_dim])
    return hidden_states.reshape([batch, seq, kv_heads * n_rep, head_dim])


def soft_cap(x: paddle.Tensor, cap: float | None) -> paddle.Tensor:
    """``cap * tanh(x / cap)`` (HF's attention-logit and final-logit softcapping); ``cap=None`` leaves ``x`` as is."""
    return x if cap is None else paddle.tanh(x / cap) * cap


def eager_attention_forward(
    module: nn.Layer,
    query: paddle.Tensor,
    key: paddle.Tensor,
    value: paddle.Tensor,
    attention_mask: paddle.Tensor,
    scaling: float,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    **kwargs,
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Softmax attention in float32; the weights are [b, heads, q_len, kv_len]."""
    if sliding_window is not None:
        attention_mask = apply_sliding_window(attention_mask, sliding_window)
    key = repeat_kv(key, module.num_key_value_groups).transpose([0, 2, 1, 3])
    value = repeat_kv(value, module.num_key_value_groups).transpose([0, 2, 1, 3])
    query = query.transpose([0, 2, 1, 3])
    attn_weights = soft_cap(
        paddle.matmul(query, key, transpose_y=True) * scaling, getattr(module, "attn_logit_softcapping", None)
    )
    attn_weights = F.softmax(attn_weights.astype("float32") + attention_mask, axis=-1).astype(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = paddle.matmul(attn_weights, value).transpose([0, 2, 1, 3])
    return attn_output, attn_weights


def sdpa_attention_forward(
    module: nn.Layer,
    query: paddle.Tensor,
    key: paddle.Tensor,
    value: paddle.Tensor,
    attention_mask: paddle.Tensor,
    scaling: float,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    **kwargs,
) -> tuple[paddle.Tensor, None]:
    """Paddle's ``scaled_dot_product_attention``; no weights are returned."""
    if getattr(module, "attn_logit_softcapping", None) is not None:  # the fused kernel has no softcap
        attn_output, _ = eager_attention_forward(
            module, query, key, value, attention_mask, scaling, dropout, sliding_window
        )
        return attn_output, None
    if sliding_window is not None:
        attention_mask = apply_sliding_window(attention_mask, sliding_window)
    attn_output = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask.astype(query.dtype),
        dropout_p=dropout,
        training=module.training,
        scale=scaling,
        enable_gqa=True,
    )
    return attn_output, None


ATTENTION_FUNCTIONS: dict[str, Callable[..., tuple[paddle.Tensor, paddle.Tensor | None]]] = {
    "eager": eager_attention_forward,
    "sdpa": sdpa_attention_forward,
}


def attention_function(config) -> Callable[..., tuple[paddle.Tensor, paddle.Tensor | None]]:
    """The attention implementation selected by the config."""
    return ATTENTION_FUNCTIONS["sdpa" if config.use_flash_attention else "eager"]
