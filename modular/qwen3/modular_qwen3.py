"""Qwen3: Qwen2 with per-head RMSNorm on q and k (before RoPE), an explicit ``head_dim`` and ``attention_bias``."""

import paddle

from generated.qwen2.configuration_qwen2 import Qwen2Config
from generated.qwen2.modeling_qwen2 import (
    Qwen2Attention,
    Qwen2ForCausalLM,
    Qwen2Model,
    Qwen2PretrainedModel,
    Qwen2RMSNorm,
)
from modbuild.nn.parallel import build_linear, sum_grads_over_ranks


class Qwen3Config(Qwen2Config):
    model_type = "qwen3"

    def __init__(self, head_dim: int | None = 128, **super_kwargs):
        super().__init__(head_dim=head_dim, **super_kwargs)


class Qwen3Attention(Qwen2Attention):
    def __init__(self, config: Qwen3Config, layer_idx: int):
        super().__init__(config, layer_idx)
        # q/k/v biases follow `attention_bias`, as in Llama (Qwen2 always has them).
        self.q_proj = build_linear(
            config.hidden_size,
            config.num_attention_heads * self.head_dim,
            config,
            config.base_model_tp_plan.get("layers.*.self_attn.q_proj"),
            config.attention_bias,
        )
        self.k_proj = build_linear(
            config.hidden_size,
            config.num_key_value_heads * self.head_dim,
            config,
            config.base_model_tp_plan.get("layers.*.self_attn.k_proj"),
            config.attention_bias,
        )
        self.v_proj = build_linear(
            config.hidden_size,
            config.num_key_value_heads * self.head_dim,
            config,
            config.base_model_tp_plan.get("layers.*.self_attn.v_proj"),
            config.attention_bias,
        )
        self.q_norm = Qwen2RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = Qwen2RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        # Each rank normalises only its own heads with these shared weights.
        sum_grads_over_ranks(self.q_norm, config)
        sum_grads_over_ranks(self.k_norm, config)

    def project_qkv(
        self, hidden_states: paddle.Tensor, hidden_shape: list[int]
    ) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        query_states, key_states, value_states = super().project_qkv(hidden_states, hidden_shape)
        return self.q_norm(query_states), self.k_norm(key_states), value_states


class Qwen3PretrainedModel(Qwen2PretrainedModel):
    @classmethod
    def _layer_param_actions(cls, config: Qwen3Config, layer_idx: int) -> dict[str, str | None]:
        actions = super()._layer_param_actions(config, layer_idx)
        if not config.attention_bias:  # no q/k/v biases
            actions = {n: a for n, a in actions.items() if not (n.startswith("self_attn.") and n.endswith(".bias"))}
        return actions | {"self_attn.q_norm.weight": None, "self_attn.k_norm.weight": None}


class Qwen3Model(Qwen2Model):
    pass


class Qwen3ForCausalLM(Qwen2ForCausalLM):
    pass
