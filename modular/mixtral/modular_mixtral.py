"""Mixtral: Mistral whose MLPs are top-k routed experts (w1/w2/w3), with HF's router aux loss.

HF names the MoE block ``block_sparse_moe``; here it stays ``mlp`` and ``_get_name_mappings`` translates.
Tensor parallelism: the router gate is replicated (every rank routes the same tokens alike); each expert is split
like a dense MLP (w1/w3 column-wise, w2 row-wise), as in HF's plan.
"""

from typing import ClassVar

import paddle
import paddle.nn.functional as F
from paddle import nn
from paddlenlp.transformers.conversion_utils import StateDictNameMapping
from paddlenlp.transformers.model_outputs import MoECausalLMOutputWithPast

from generated.mistral.configuration_mistral import MistralConfig
from generated.mistral.modeling_mistral import (
    MistralDecoderLayer,
    MistralForCausalLM,
    MistralModel,
    MistralPretrainedModel,
)
from modbuild.nn.activations import get_activation
from modbuild.nn.moe import moe_causal_lm_forward
from modbuild.nn.parallel import build_linear


class MixtralConfig(MistralConfig):
    model_type = "mixtral"
    base_model_tp_plan: ClassVar[dict[str, str]] = {
        "embed_tokens": "vocab",
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.experts.*.w1": "colwise",
        "layers.*.mlp.experts.*.w2": "rowwise",
        "layers.*.mlp.experts.*.w3": "colwise",
    }

    def __init__(
        self,
        rms_norm_eps: float = 1e-5,
        rope_theta: float = 1e6,
        sliding_window: int | None = None,
        num_experts_per_tok: int = 2,
        num_local_experts: int = 8,
        output_router_logits: bool = False,
        router_aux_loss_coef: float = 0.001,
        router_jitter_noise: float = 0.0,
        **super_kwargs,
    ):
        super().__init__(
            rms_norm_eps=rms_norm_eps, rope_theta=rope_theta, sliding_window=sliding_window, **super_kwargs
        )
        self.num_experts_per_tok = num_experts_per_tok
        self.num_local_experts = num_local_experts
        self.output_router_logits = output_router_logits
        self.router_aux_loss_coef = router_aux_loss_coef
        self.router_jitter_noise = router_jitter_noise
        if self.sequence_parallel:
            raise ValueError("sequence_parallel is unsupported with MoE: each expert sees a different token subset")


class MixtralBlockSparseTop2MLP(nn.Layer):
    def __init__(self, config: MixtralConfig):
        super().__init__()
        plan, hidden, ffn = config.base_model_tp_plan, config.hidden_size, config.intermediate_size
        self.w1 = build_linear(hidden, ffn, config, plan.get("layers.*.mlp.experts.*.w1"))
        self.w2 = build_linear(ffn, hidden, config, plan.get("layers.*.mlp.experts.*.w2"))
        self.w3 = build_linear(hidden, ffn, config, plan.get("layers.*.mlp.experts.*.w3"))
        self.act_fn = get_activation(config.hidden_act)

    def forward(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        return self.w2(self.act_fn(self.w1(hidden_states)) * self.w3(hidden_states))


class MixtralSparseMoeBlock(nn.Layer):
    def __init__(self, config: MixtralConfig):
        super().__init__()
        self.top_k, self.jitter_noise = config.num_experts_per_tok, config.router_jitter_noise
        self.gate = nn.Linear(config.hidden_size, config.num_local_experts, bias_attr=False)
        self.experts = nn.LayerList([MixtralBlockSparseTop2MLP(config) for _ in range(config.num_local_experts)])

    def forward(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        if self.training and self.jitter_noise > 0:
            noise = paddle.uniform(
                hidden_states.shape, hidden_states.dtype, 1.0 - self.jitter_noise, 1.0 + self.jitter_noise
            )
            hidden_states = hidden_states * noise
        tokens = hidden_states.reshape([-1, hidden_states.shape[-1]])
        routing_weights = F.softmax(self.gate(tokens).astype("float32"), axis=-1)
        routing_weights, selected_experts = paddle.topk(routing_weights, self.top_k)
        routing_weights = (routing_weights / routing_weights.sum(-1, keepdim=True)).astype(tokens.dtype)
        output = paddle.zeros_like(tokens)
        for expert_idx, expert in enumerate(self.experts):
            token_idx, top_k_idx = paddle.nonzero(selected_experts == expert_idx, as_tuple=True)
            if token_idx.shape[0] > 0:
                weights = routing_weights[token_idx, top_k_idx].unsqueeze(-1)
                output = output.index_add(token_idx, 0, expert(tokens[token_idx]) * weights)
        return output.reshape(hidden_states.shape)


class MixtralDecoderLayer(MistralDecoderLayer):
    def __init__(self, config: MixtralConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.mlp = MixtralSparseMoeBlock(config)


class MixtralPretrainedModel(MistralPretrainedModel):
    @classmethod
    def _layer_param_actions(cls, config: MixtralConfig, layer_idx: int) -> dict[str, str | None]:
        actions = super()._layer_param_actions(config, layer_idx)
        actions = {name: a for name, a in actions.items() if not name.startswith("mlp.")}
        experts = range(config.num_local_experts)
        actions |= {f"mlp.experts.{e}.w{i}.weight": "transpose" for e in experts for i in (1, 2, 3)}
        return actions | {"mlp.gate.weight": "transpose"}

    @classmethod
    def _get_name_mappings(cls, config: MixtralConfig) -> list[StateDictNameMapping]:
        mappings = super()._get_name_mappings(config)
        for mapping in mappings:
            mapping.source_name = mapping.source_name.replace(".mlp.", ".block_sparse_moe.")
        return mappings


class MixtralModel(MistralModel):
    pass


class MixtralForCausalLM(MistralForCausalLM):
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
        gates = [layer.mlp.gate for layer in self.mixtral.layers]
        return moe_causal_lm_forward(
            self,
            self.mixtral,
            gates,
            self.config.num_local_experts,
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
