"""Model-agnostic MoE routing blocks, as HF 4.55.4 computes them (DeepSeek-V3's router; reusable by any model with
bias-corrected, group-limited selection or with experts combined by per-token weights).

- ``group_limited_topk``: the top-k experts of each token, chosen only inside its best ``topk_group`` groups.
- ``sigmoid_topk_routing``: sigmoid scores, a correction bias used for the selection only, optional
  normalisation of the chosen scores and a routed scaling factor.
- ``combine_experts``: tokens through their chosen experts, summed with the routing weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import paddle
import paddle.nn.functional as F
from paddle import nn


def group_limited_topk(scores: paddle.Tensor, n_group: int, topk_group: int, top_k: int) -> paddle.Tensor:
    """Indices [tokens, top_k] of the chosen experts for ``scores`` [tokens, experts].

    The experts form ``n_group`` equal groups; a group scores the sum of its two best experts, and only the experts
    of the ``topk_group`` best groups can be chosen. The others are set to 0.0 before the final top-k, not to
    -inf (HF's DeepSeek-V3 does so: a masked expert can still win over negative bias-corrected scores)."""
    tokens, experts = scores.shape
    grouped = scores.reshape([tokens, n_group, experts // n_group])
    group_scores = paddle.topk(grouped, 2, axis=-1)[0].sum(-1)
    group_idx = paddle.topk(group_scores, topk_group, axis=-1)[1]
    group_mask = paddle.zeros_like(group_scores).put_along_axis(group_idx, 1.0, axis=1)
    expert_mask = group_mask.unsqueeze(-1).expand([tokens, n_group, experts // n_group]).reshape([tokens, experts])
    masked = paddle.where(expert_mask.astype("bool"), scores, paddle.zeros_like(scores))
    return paddle.topk(masked, top_k, axis=-1)[1]


def sigmoid_topk_routing(
    router_logits: paddle.Tensor,
    correction_bias: paddle.Tensor | None,
    n_group: int,
    topk_group: int,
    top_k: int,
    norm_topk_prob: bool,
    routed_scaling_factor: float,
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """(indices, weights), each [tokens, top_k], from ``router_logits`` [tokens, experts].

    The selection adds ``correction_bias`` [experts] to the sigmoid scores and carries no gradient; the weights are
    the uncorrected scores of the chosen experts (normalised to sum 1 when ``norm_topk_prob``), times
    ``routed_scaling_factor``."""
    scores = F.sigmoid(router_logits)
    with paddle.no_grad():
        for_choice = scores.detach() if correction_bias is None else scores.detach() + correction_bias.unsqueeze(0)
        indices = group_limited_topk(for_choice, n_group, topk_group, top_k)
    weights = paddle.take_along_axis(scores, indices, axis=1)
    if norm_topk_prob:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    return indices, weights * routed_scaling_factor


def combine_experts(
    experts: Sequence[nn.Layer], tokens: paddle.Tensor, indices: paddle.Tensor, weights: paddle.Tensor
) -> paddle.Tensor:
    """Tokens [n, hidden] through their chosen experts (``indices`` [n, top_k]), summed with ``weights`` [n, top_k]
    in expert order, in the weights' dtype (HF's loop, so that the sums round alike)."""
    output = paddle.zeros(tokens.shape, dtype=weights.dtype)
    for expert_idx, expert in enumerate(experts):
        token_idx, top_k_idx = paddle.nonzero(indices == expert_idx, as_tuple=True)
        if token_idx.shape[0] > 0:
            expert_out = expert(tokens[token_idx]) * weights[token_idx, top_k_idx].unsqueeze(-1)
            output = output.index_add(token_idx, 0, expert_out)
    return output.astype(tokens.dtype)
