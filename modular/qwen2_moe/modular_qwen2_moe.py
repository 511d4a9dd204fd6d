"""Qwen2-MoE: Qwen2 whose MLPs are top-k routed experts plus a sigmoid-gated shared expert, with HF's router aux loss.

Tensor parallelism: the router gates are replicated (every rank routes the same tokens alike); each expert, and the
shared expert, is split like a dense MLP (gate/up column-wise, down row-wise), as in HF's plan.
"""

from typing import ClassVar

import paddle
import paddle.nn.functional as F
from paddle import nn
from paddlenlp.transformers.model_outputs import MoECausalLMOutputWithPast

from generated.qwen2.configuration_qwen2 import Qwen2Config
from generated.qwen2.modeling_qwen2 import (
    Qwen2DecoderLayer,
    Qwen2ForCausalLM,
    Qwen2MLP,
    Qwen2Model,
    Qwen2PretrainedModel,
)
from modbuild.nn.moe import moe_causal_lm_forward


class Qwen2MoeConfig(Qwen2Config):
    """HF ``Qwen2MoeConfig``. Only ``qkv_bias=True`` (every released checkpoint) is supported."""

    model_type = "qwen2_moe"
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
        "layers.*.mlp.shared_expert.gate_proj": "colwise",
        "layers.*.mlp.shared_expert.up_proj": "colwise",
        "layers.*.mlp.shared_expert.down_proj": "rowwise",
    }

    def __init__(
        self,
        hidden_size: int = 2048,
        intermediate_size: int = 5632,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 16,
        num_key_value_heads: int | None = 16,
        decoder_sparse_step: int = 1,
        moe_intermediate_size: int = 1408,
        shared_expert_intermediate_size: int = 5632,
        num_experts_per_tok: int = 4,
        num_experts: int = 60,
        norm_topk_prob: bool = False,
        output_router_logits: bool = False,
        router_aux_loss_coef: float = 0.001,
        mlp_only_layers: list[int] | None = None,
        qkv_bias: bool = True,
        **super_kwargs,
    ):
        super().__init__(
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            **super_kwargs,
        )
        self.decoder_sparse_step = decoder_sparse_step
        self.moe_intermediate_size = moe_intermediate_size
        self.shared_expert_intermediate_size = shared_expert_intermediate_size
        self.num_experts_per_tok = num_experts_per_tok
        self.num_experts = num_experts
        self.norm_topk_prob = norm_topk_prob
        self.output_router_logits = output_router_logits
        self.router_aux_loss_coef = router_aux_loss_coef
        self.mlp_only_layers = mlp_only_layers or []
        self.qkv_bias = qkv_bias
        if not qkv_bias:
            raise ValueError("qkv_bias=False is unsupported: the attention always has q/k/v biases")
        if self.sequence_parallel:
            raise ValueError("sequence_parallel is unsupported with MoE: each expert sees a different token subset")


def is_sparse_layer(config: Qwen2MoeConfig, layer_idx: int) -> bool:
    """HF's rule: every ``decoder_sparse_step``-th layer is a MoE layer, except those in ``mlp_only_layers``."""
    return (
        layer_idx not in config.mlp_only_layers
        and config.num_experts > 0
        and (layer_idx + 1) % config.decoder_sparse_step == 0
    )


class Qwen2MoeSparseMoeBlock(nn.Layer):
    def __init__(self, config: Qwen2MoeConfig):
        super().__init__()
        self.top_k, self.norm_topk_prob = config.num_experts_per_tok, config.norm_topk_prob
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias_attr=False)
        self.experts = nn.LayerList(
            [
                Qwen2MLP(config, config.moe_intermediate_size, plan_prefix="layers.*.mlp.experts.*")
                for _ in range(config.num_experts)
            ]
        )
        self.shared_expert = Qwen2MLP(
            config, config.shared_expert_intermediate_size, plan_prefix="layers.*.mlp.shared_expert"
        )
        self.shared_expert_gate = nn.Linear(config.hidden_size, 1, bias_attr=False)

    def routed_experts(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        """Tokens [n, hidden] through their top-k experts, summed with the routing weights."""
        routing_weights = F.softmax(self.gate(hidden_states).astype("float32"), axis=-1)
        routing_weights, selected_experts = paddle.topk(routing_weights, self.top_k)
        if self.norm_topk_prob:
            routing_weights = routing_weights / routing_weights.sum(-1, keepdim=True)
        routing_weights = routing_weights.astype(hidden_states.dtype)
        output = paddle.zeros_like(hidden_states)
        for expert_idx, expert in enumerate(self.experts):
            token_idx, top_k_idx = paddle.nonzero(selected_experts == expert_idx, as_tuple=True)
            if token_idx.shape[0] > 0:
                weights = routing_weights[token_idx, top_k_idx].unsqueeze(-1)
                output = output.index_add(token_idx, 0, expert(hidden_states[token_idx]) * weights)
        return output

    def forward(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        tokens = hidden_states.reshape([-1, hidden_states.shape[-1]])
        shared = F.sigmoid(self.shared_expert_gate(tokens)) * self.shared_expert(tokens)
        return (self.routed_experts(tokens) + shared).reshape(hidden_states.shape)


class Qwen2MoeDecoderLayer(Qwen2DecoderLayer):
    def __init__(self, config: Qwen2MoeConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.mlp = Qwen2MoeSparseMoeBlock(config) if is_sparse_layer(config, layer_idx) else Qwen2MLP(config)


class Qwen2MoePretrainedModel(Qwen2PretrainedModel):
    @classmethod
    def _layer_param_actions(cls, config: Qwen2MoeConfig, layer_idx: int) -> dict[str, str | None]:
        actions = super()._layer_param_actions(config, layer_idx)
        if is_sparse_layer(config, layer_idx):
            mlps = [f"experts.{e}" for e in range(config.num_experts)] + ["shared_expert"]
            actions = {name: a for name, a in actions.items() if not name.startswith("mlp.")}
            actions |= {f"mlp.{mlp}.{p}_proj.weight": "transpose" for mlp in mlps for p in ("gate", "up", "down")}
            actions |= {"mlp.gate.weight": "transpose", "mlp.shared_expert_gate.weight": "transpose"}
        return actions


class Qwen2MoeModel(Qwen2Model):
    pass


class Qwen2MoeForCausalLM(Qwen2ForCausalLM):
    def forward(
        self,
        input_ids: paddle.Tensor | None = None,
        attention_mask: paddle.Tensor | None = None,
        position_ids: paddle.Tensor | None = None,
        past_key_values: tuple[tuple[paddle.Tensor, paddle.Tensor], ...] | None = None,
        inputs_embeds: paddle.Tensor | None = None,
        labels: paddle.Tensor | None = None,
        use_cache: bool | None = None,
        output_router_logits: bool | None = None,
        return_dict: bool | None = None,
    ) -> MoECausalLMOutputWithPast | tuple:
        """``output_router_logits`` (default: the config's) also returns the router logits and adds the aux loss."""
        gates = [layer.mlp.gate for layer in self.qwen2_moe.layers if isinstance(layer.mlp, Qwen2MoeSparseMoeBlock)]
        return moe_causal_lm_forward(
            self,
            self.qwen2_moe,
            gates,
            self.config.num_experts,
            labels,
            output_router_logits,
            return_dict,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
        )
