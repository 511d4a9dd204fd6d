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


def moe_causal_lm_forward(
    lm: nn.Layer,
    base_model: nn.Layer,
    gates: list[nn.Layer],
    num_experts: int,
    labels: paddle.Tensor | None,
    output_router_logits: bool | None,
    return_dict: bool | None,
    **inputs,
):
    """An MoE causal LM's forward: the base model's run with the router logits recorded, the logits,
    and the LM loss plus ``router_aux_loss_coef`` times the load-balancing loss (HF semantics)."""
    from paddlenlp.transformers.model_outputs import MoECausalLMOutputWithPast

    config = lm.config
    return_dict = config.return_dict if return_dict is None else return_dict
    if output_router_logits is None:
        output_router_logits = config.output_router_logits
    with record_outputs(gates if output_router_logits else []) as router_logits:
        outputs = base_model(**inputs, return_dict=True)
    logits = lm.compute_logits(outputs.last_hidden_state)
    loss = None if labels is None else lm.compute_loss(logits, labels)
    aux_loss = None
    if output_router_logits:
        mask = inputs.get("attention_mask")
        mask = None if mask is None else mask[:, -logits.shape[1] :]
        aux_loss = load_balancing_loss_func(router_logits, num_experts, config.num_experts_per_tok, mask)
        if loss is not None:
            loss = loss + config.router_aux_loss_coef * aux_loss
    router_logits = tuple(router_logits) if output_router_logits else None
    if not return_dict:
        return tuple(v for v in (loss, aux_loss, logits, outputs.past_key_values, router_logits) if v is not None)
    return MoECausalLMOutputWithPast(
        loss=loss,
        aux_loss=aux_loss,
        logits=logits,
        past_key_values=outputs.past_key_values,
        router_logits=router_logits,
    )
