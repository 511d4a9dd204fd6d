"""Mixture-of-experts helpers shared by the MoE models (Mixtral, Qwen2-MoE and their children)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import paddle
import paddle.nn.functional as F
from paddle import nn


@contextmanager
def record_outputs(layers: list[nn.Layer]) -> Iterator[list[paddle.Tensor]]:
    """Collect the output of every forward call of ``layers`` while open (HF's ``OutputRecorder``)."""
    outputs = []
    handles = [layer.register_forward_post_hook(lambda _, __, output: outputs.append(output)) for layer in layers]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def load_balancing_loss_func(
    gate_logits: list[paddle.Tensor], num_experts: int, top_k: int, attention_mask: paddle.Tensor | None = None
) -> paddle.Tensor:
    """HF's Switch-Transformer load-balancing loss over all sparse layers' router logits [tokens, experts] each.

    Padding (``attention_mask`` == 0, [batch, seq]) is left out of both averages.
    """
    routing_weights = F.softmax(paddle.concat(gate_logits).astype("float32"), axis=-1)
    expert_mask = F.one_hot(paddle.topk(routing_weights, top_k)[1], num_experts)  # [layers * tokens, top_k, experts]
    if attention_mask is None:
        token_mask = paddle.ones([routing_weights.shape[0]], dtype="float32")
    else:
        token_mask = attention_mask.astype("float32").reshape([-1]).tile([len(gate_logits)])
    tokens_per_expert = (expert_mask * token_mask[:, None, None]).sum(0) / token_mask.sum()
    router_prob_per_expert = (routing_weights * token_mask[:, None]).sum(0) / token_mask.sum()
    return (tokens_per_expert * router_prob_per_expert.unsqueeze(0)).sum() * num_experts
