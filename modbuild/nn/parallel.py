"""Tensor-parallel layers built from a declarative, HF-style plan.

A plan maps module paths (``"layers.*.self_attn.q_proj"``) to a style:

- ``"colwise"``: output features split over ranks, output stays sharded.
- ``"colwise_rep"``: output features split, output gathered (replicated), as for ``lm_head``.
- ``"colwise_fused2"`` / ``"colwise_fused3"``: a fused projection of 2 (3) equal parts, each part split over ranks
  on its own (GLM's ``gate_up_proj``), output stays sharded.
- ``"colwise_qkv"``: a fused q/k/v projection (Phi-3's ``qkv_proj``) of ``num_attention_heads``,
  ``num_key_value_heads`` and ``num_key_value_heads`` heads, each part split by heads on its own (``[q_r, k_r, v_r]``
  on rank r), output stays sharded.
- ``"rowwise"``: input features split, output all-reduced.
- ``"vocab"``: embedding rows split.

With ``tensor_parallel_degree == 1`` every factory returns the plain paddle layer, so model code carries no
parallel branches. The checkpoint split rules (``_get_tensor_parallel_mappings``) are derived from the same plan.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from functools import partial

import numpy as np
import paddle
from paddle import nn
from paddle.distributed import fleet
from paddle.distributed.fleet.layers.mpu import mp_ops
from paddle.distributed.fleet.utils import sequence_parallel_utils as sp_utils
from paddlenlp.transformers.conversion_utils import split_or_merge_func

# (style, parameter kind) -> `is_column` for paddlenlp's split function; absent pairs stay replicated.
# Paddle Linear weights are [in, out]: column splits the last axis, row splits axis 0 (as do vocab rows).
_SPLIT_IS_COLUMN = {
    ("colwise", "weight"): True,
    ("colwise", "bias"): True,
    ("colwise_rep", "weight"): True,
    ("colwise_rep", "bias"): True,
    ("rowwise", "weight"): False,
    ("vocab", "weight"): False,
}
# Fused projections split part by part: "colwise_fused2" (GLM's gate_up_proj) gives each rank its slice of the gate
# half and of the up half, [gate_r, up_r], which it chunks locally; paddlenlp's naive-fuse split/merge does the same.
_FUSED_SPLIT_KWARGS = {"colwise_fused2": {"is_naive_2fuse": True}, "colwise_fused3": {"is_naive_3fuse": True}}
# Fused projections of unequal parts (GQA's q, k, v): style -> the parts' relative sizes, in heads.
_FUSED_SECTIONS = {
    "colwise_qkv": lambda config: [config.num_attention_heads, config.num_key_value_heads, config.num_key_value_heads]
}

DENSE_LAYER_TYPES = (
    nn.Linear,
    nn.Embedding,
    fleet.meta_parallel.ColumnParallelLinear,
    fleet.meta_parallel.RowParallelLinear,
    fleet.meta_parallel.VocabParallelEmbedding,
    sp_utils.ColumnSequenceParallelLinear,
    sp_utils.RowSequenceParallelLinear,
)


def init_dense_weights(layer: nn.Layer, std: float) -> None:
    """N(0, std) weights for a linear or embedding layer (parallel ones too); any other layer is left alone."""
    if isinstance(layer, DENSE_LAYER_TYPES):
        layer.weight.set_value(paddle.normal(0.0, std, layer.weight.shape).astype(layer.weight.dtype))


def tensor_parallel_enabled(config) -> bool:
    return config.tensor_parallel_degree > 1


def sequence_parallel_enabled(config) -> bool:
    return bool(config.sequence_parallel) and tensor_parallel_enabled(config)


def build_linear(in_features: int, out_features: int, config, plan: str | None, bias: bool = False) -> nn.Layer:
    """A linear layer for one plan style; a plain ``nn.Linear`` without tensor parallelism or plan entry."""
    if plan is None or not tensor_parallel_enabled(config):
        return nn.Linear(in_features, out_features, bias_attr=None if bias else False)
    sequence_parallel = sequence_parallel_enabled(config)
    if plan == "colwise" or plan in _FUSED_SPLIT_KWARGS or plan in _FUSED_SECTIONS:
        cls = sp_utils.ColumnSequenceParallelLinear if sequence_parallel else fleet.meta_parallel.ColumnParallelLinear
        return cls(in_features, out_features, has_bias=bias, gather_output=False)
    if plan == "colwise_rep":
        return fleet.meta_parallel.ColumnParallelLinear(in_features, out_features, has_bias=bias, gather_output=True)
    if plan == "rowwise":
        cls = sp_utils.RowSequenceParallelLinear if sequence_parallel else fleet.meta_parallel.RowParallelLinear
        return cls(in_features, out_features, has_bias=bias, input_is_parallel=True)
    raise ValueError(f"unknown tensor-parallel style for a linear layer: {plan!r}")


def build_embedding(num_embeddings: int, embedding_dim: int, config, plan: str | None) -> nn.Layer:
    """A vocab-sharded embedding for plan ``"vocab"`` under tensor parallelism, else ``nn.Embedding``."""
    if plan is None or not tensor_parallel_enabled(config):
        return nn.Embedding(num_embeddings, embedding_dim)
    if plan == "vocab":
        return fleet.meta_parallel.VocabParallelEmbedding(num_embeddings, embedding_dim)
    raise ValueError(f"unknown tensor-parallel style for an embedding: {plan!r}")


def tied_logits(hidden_states: paddle.Tensor, embedding_weight: paddle.Tensor, config) -> paddle.Tensor:
    """Logits against a (possibly vocab-sharded) [vocab, hidden] embedding table, gathered over ranks."""
    if not tensor_parallel_enabled(config):
        return paddle.matmul(hidden_states, embedding_weight, transpose_y=True)
    group = fleet.get_hybrid_communicate_group().get_model_parallel_group()
    # Looked up on mp_ops at call time so the CPU/gloo shim's replacements apply.
    hidden_states = mp_ops._c_identity(hidden_states, group=group)
    return mp_ops._c_concat(paddle.matmul(hidden_states, embedding_weight, transpose_y=True), group=group)


def scatter_sequence(hidden_states: paddle.Tensor, config) -> paddle.Tensor:
    """Under sequence parallelism, [b, s, h] -> this rank's [b*s/tp, h] token slice; identity otherwise."""
    if not sequence_parallel_enabled(config):
        return hidden_states
    return sp_utils.ScatterOp.apply(hidden_states.reshape([-1, hidden_states.shape[-1]]))


def gather_sequence(hidden_states: paddle.Tensor, batch_shape: list[int], config) -> paddle.Tensor:
    """Inverse of ``scatter_sequence``: all tokens back, reshaped to ``batch_shape + [h]``."""
    if not sequence_parallel_enabled(config):
        return hidden_states
    return sp_utils.GatherOp.apply(hidden_states).reshape([*batch_shape, -1])


def mark_sequence_parallel(layer: nn.Layer, config) -> None:
    """Under sequence parallelism a norm sees only this rank's tokens, so its grads must be all-reduced."""
    if sequence_parallel_enabled(config):
        for param in layer.parameters():
            sp_utils.mark_as_sequence_parallel_parameter(param)


def _plan_pattern(module_path: str) -> re.Pattern:
    return re.compile(re.escape(module_path).replace(r"\*", r"\d+") + r"\.(weight|bias)")


def tensor_parallel_actions(
    plan: Mapping[str, str], param_names: Iterable[str], config, is_split: bool = True
) -> dict[str, Callable]:
    """paddlenlp ``_get_tensor_parallel_mappings`` actions for ``param_names``, derived from ``plan``."""
    fn = split_or_merge_func(
        is_split=is_split,
        tensor_parallel_degree=config.tensor_parallel_degree,
        tensor_parallel_rank=config.tensor_parallel_rank,
        num_attention_heads=config.num_attention_heads,
    )
    patterns = [(_plan_pattern(path), style) for path, style in plan.items()]
    actions = {}
    for name in param_names:
        for pattern, style in patterns:
            match = pattern.fullmatch(name)
            if match and (style, match.group(1)) in _SPLIT_IS_COLUMN:
                actions[name] = partial(fn, is_column=_SPLIT_IS_COLUMN[style, match.group(1)])
            elif match and style in _FUSED_SPLIT_KWARGS:
                actions[name] = partial(fn, is_column=True, **_FUSED_SPLIT_KWARGS[style])
            elif match and style in _FUSED_SECTIONS:
                sections = _FUSED_SECTIONS[style](config)
                actions[name] = (
                    partial(
                        split_fused,
                        sections=sections,
                        degree=config.tensor_parallel_degree,
                        rank=config.tensor_parallel_rank,
                    )
                    if is_split
                    else partial(merge_fused, sections=sections)
                )
    return actions


def _section_bounds(size: int, sections: list[int]) -> list[int]:
    """Where each part of a fused last axis of ``size`` features ends (but the last), parts in proportion to
    ``sections``."""
    if size % sum(sections):
        raise ValueError(f"a fused axis of {size} features does not divide into parts of {sections}")
    unit = size // sum(sections)
    return np.cumsum([s * unit for s in sections])[:-1].tolist()


def split_fused(x: np.ndarray, sections: list[int], degree: int, rank: int) -> np.ndarray:
    """Rank ``rank``'s share of a fused tensor (parts along the last axis in proportion to ``sections``): its slice
    of each part, the parts kept in order."""
    parts = np.split(x, _section_bounds(x.shape[-1], sections), axis=-1)
    return np.concatenate([np.split(part, degree, axis=-1)[rank] for part in parts], axis=-1)


def merge_fused(shares: list[np.ndarray], sections: list[int]) -> np.ndarray:
    """Inverse of ``split_fused``: the full fused tensor from every rank's share, in rank order."""
    parts = [np.split(share, _section_bounds(share.shape[-1], sections), axis=-1) for share in shares]
    return np.concatenate([np.concatenate(ranks, axis=-1) for ranks in zip(*parts)], axis=-1)


def sum_grads_over_ranks(layer: nn.Layer, config) -> None:
    """A replicated layer applied to this rank's shard of heads (Qwen3's q/k norms) only sees part of its
    gradient: sum it over the tensor-parallel group. A no-op without tensor parallelism."""
    if not tensor_parallel_enabled(config):
        return
    group = fleet.get_hybrid_communicate_group().get_model_parallel_group()

    def all_reduce(grad: paddle.Tensor) -> paddle.Tensor:
        grad = grad.clone()
        paddle.distributed.all_reduce(grad, group=group)
        return grad

    for param in layer.parameters():
        param.register_hook(all_reduce)


def replicated_input(tensor: paddle.Tensor, config) -> paddle.Tensor:
    """A replicated tensor that each rank then uses for its own heads only (DeepSeek-V3's rope key, shared by every
    head): the identity forward, its gradient summed over the tensor-parallel group backward (what a column-parallel
    linear does to its input). The identity without tensor parallelism."""
    if not tensor_parallel_enabled(config):
        return tensor
    group = fleet.get_hybrid_communicate_group().get_model_parallel_group()
    return mp_ops._c_identity(tensor, group=group)  # looked up at call time: the CPU/gloo shim's replacement
