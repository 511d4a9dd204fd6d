"""Qwen3-MoE: Qwen3's attention (q/k norms, ``head_dim``, ``attention_bias``) with Qwen2-MoE's routed experts,
without the shared expert. Sliding windows, when enabled, apply to every layer (HF Qwen3-MoE)."""

from typing import ClassVar

import paddle

from generated.qwen2_moe.configuration_qwen2_moe import Qwen2MoeConfig
from generated.qwen2_moe.modeling_qwen2_moe import (
    Qwen2MoeForCausalLM,
    Qwen2MoeModel,
    Qwen2MoePretrainedModel,
    Qwen2MoeSparseMoeBlock,
)
from generated.qwen3.modeling_qwen3 import Qwen3Attention


class Qwen3MoeConfig(Qwen2MoeConfig):
    """HF ``Qwen3MoeConfig``: no shared expert; ``attention_bias`` replaces ``qkv_bias``."""

    model_type = "qwen3_moe"
    base_model_tp_plan: ClassVar[dict[str, str]] = {
        "embed_tokens": "vocab",
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
        "layers.*.mlp.experts.*.gate_proj": "colwise",
        "layers.*.mlp.experts.*.up_proj": "colwise",
        "layers.*.mlp.experts.*.down_proj": "rowwise",
    }

    def __init__(
        self,
        intermediate_size: int = 6144,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = 4,
        moe_intermediate_size: int = 768,
        num_experts_per_tok: int = 8,
        num_experts: int = 128,
        layer_types: list[str] | None = None,
        **super_kwargs,
    ):
        super().__init__(
            intermediate_size=intermediate_size,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            moe_intermediate_size=moe_intermediate_size,
            num_experts_per_tok=num_experts_per_tok,
            num_experts=num_experts,
            layer_types=layer_types,
            **super_kwargs,
        )
        self.layer_types = (
            layer_types
            or ["full_attention" if self.sliding_window is None else "sliding_attention"] * self.num_hidden_layers
        )
        del self.qkv_bias


class Qwen3MoeAttention(Qwen3Attention):
    pass


class Qwen3MoeSparseMoeBlock(Qwen2MoeSparseMoeBlock):
    def __init__(self, config: Qwen3MoeConfig):
        super().__init__(config)
        del self.shared_expert
        del self.shared_expert_gate

    def forward(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        tokens = hidden_states.reshape([-1, hidden_states.shape[-1]])
        return self.routed_experts(tokens).reshape(hidden_states.shape)


class Qwen3MoePretrainedModel(Qwen2MoePretrainedModel):
    @classmethod
    def _layer_param_actions(cls, config: Qwen3MoeConfig, layer_idx: int) -> dict[str, str | None]:
        actions = super()._layer_param_actions(config, layer_idx)
        # The attention's biases follow `attention_bias`, and q/k are normalised per head.
        actions = {n: a for n, a in actions.items() if not (n.startswith("self_attn.") and n.endswith(".bias"))}
        if config.attention_bias:
            actions |= {f"self_attn.{p}_proj.bias": None for p in "qkvo"}
        actions |= {"self_attn.q_norm.weight": None, "self_attn.k_norm.weight": None}
        return {n: a for n, a in actions.items() if "shared_expert" not in n}


class Qwen3MoeModel(Qwen2MoeModel):
    pass


class Qwen3MoeForCausalLM(Qwen2MoeForCausalLM):
    pass
