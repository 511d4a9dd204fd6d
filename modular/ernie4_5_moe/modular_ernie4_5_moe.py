"""ERNIE 4.5 MoE (HF 4.55.4's ``Ernie4_5_MoeForCausalLM``): ERNIE 4.5's attention, RoPE and ``use_bias``; from layer
``moe_layer_start_index`` to ``moe_layer_end_index``, every ``moe_layer_interval``-th layer's MLP is
``moe_num_experts`` routed experts (``moe_k`` per token) plus ``moe_num_shared_experts`` always-on shared experts
(one MLP that many times as wide); the other layers are dense. Qwen2-MoE's causal LM adds the router aux loss.

Routing: softmax over the gate's float32 logits. The experts are chosen by the probabilities plus the gate-correction
statistics (``moe_statics.e_score_correction_bias``, [1, experts]), used for the selection only: the weights are the
uncorrected probabilities of the chosen experts, divided by their sum but by no less than ``moe_norm_min``. The
statistics are a persistent buffer (HF: a Parameter with ``requires_grad=False``): in checkpoints and the state dict,
never among the parameters an optimizer updates. The aux loss is Mixtral's, over the uncorrected probabilities.

Tensor parallelism: the gate and the statistics are replicated (every rank routes alike); each routed expert and the
shared experts are split like a dense MLP. No sequence parallelism: under it each rank would route its own tokens.
"""

from typing import ClassVar

import paddle
import paddle.nn.functional as F
from paddle import nn

from generated.ernie4_5.configuration_ernie4_5 import Ernie4_5Config
from generated.ernie4_5.modeling_ernie4_5 import (
    Ernie4_5DecoderLayer,
    Ernie4_5MLP,
    Ernie4_5Model,
    Ernie4_5PretrainedModel,
)
from generated.qwen2_moe.modeling_qwen2_moe import Qwen2MoeForCausalLM
from modbuild.nn.moe_routing import combine_experts
from modbuild.nn.parallel import build_linear


class Ernie4_5_MoeConfig(Ernie4_5Config):
    """HF ``Ernie4_5_MoeConfig``; ``head_dim`` defaults to hidden / heads. ``moe_layer_end_index`` -1 is the last
    layer (stored resolved, as HF does)."""

    model_type = "ernie4_5_moe"
    attribute_map: ClassVar[dict[str, str]] = {
        "attention_bias": "use_bias",
        "mlp_bias": "use_bias",
        "num_experts": "moe_num_experts",
        "num_experts_per_tok": "moe_k",
    }
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
        "layers.*.mlp.shared_experts.gate_proj": "colwise",
        "layers.*.mlp.shared_experts.up_proj": "colwise",
        "layers.*.mlp.shared_experts.down_proj": "rowwise",
    }

    def __init__(
        self,
        hidden_size: int = 2560,
        intermediate_size: int = 12288,
        num_hidden_layers: int = 28,
        num_attention_heads: int = 20,
        num_key_value_heads: int | None = 4,
        head_dim: int | None = None,
        moe_intermediate_size: int = 1536,
        moe_k: int = 6,
        moe_num_experts: int = 64,
        moe_num_shared_experts: int = 2,
        moe_layer_start_index: int = 1,
        moe_layer_end_index: int = -1,
        moe_layer_interval: int = 1,
        moe_norm_min: float = 1e-12,
        output_router_logits: bool = False,
        router_aux_loss_coef: float = 0.001,
        **super_kwargs,
    ):
        super().__init__(
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            head_dim=head_dim,
            **super_kwargs,
        )
        self.moe_intermediate_size = moe_intermediate_size
        self.moe_k = moe_k
        self.moe_num_experts = moe_num_experts
        self.moe_num_shared_experts = moe_num_shared_experts
        self.moe_layer_start_index = moe_layer_start_index
        self.moe_layer_end_index = self.num_hidden_layers - 1 if moe_layer_end_index == -1 else moe_layer_end_index
        self.moe_layer_interval = moe_layer_interval
        self.moe_norm_min = moe_norm_min
        self.output_router_logits = output_router_logits
        self.router_aux_loss_coef = router_aux_loss_coef
        if moe_layer_interval < 1 or not 0 < moe_k <= moe_num_experts:
            raise ValueError(
                f"moe_layer_interval ({moe_layer_interval}) must be >= 1 and moe_k ({moe_k}) in 1..moe_num_experts"
                f" ({moe_num_experts})"
            )
        if self.use_bias and self.tie_word_embeddings:
            raise ValueError(
                "use_bias=True with tie_word_embeddings=True is unsupported: HF's lm_head would then add a bias to"
                " the tied embedding table's logits (no released checkpoint does); untie the embeddings"
            )
        if self.sequence_parallel:
            raise ValueError("sequence_parallel is unsupported with MoE: each rank would route its own tokens")


def is_moe_layer(config: Ernie4_5_MoeConfig, layer_idx: int) -> bool:
    """HF's rule: every ``moe_layer_interval``-th layer from ``moe_layer_start_index`` to ``moe_layer_end_index``."""
    in_range = config.moe_layer_start_index <= layer_idx <= config.moe_layer_end_index
    return in_range and (layer_idx + 1) % config.moe_layer_interval == 0


class Ernie4_5_MoeStatics(nn.Layer):
    """HF's gate-correction statistics ("statics"): ``e_score_correction_bias`` [1, experts], zeros at init."""

    def __init__(self, config: Ernie4_5_MoeConfig):
        super().__init__()
        self.register_buffer("e_score_correction_bias", paddle.zeros([1, config.moe_num_experts]), persistable=True)


class Ernie4_5_MoeSparseMoeBlock(nn.Layer):
    def __init__(self, config: Ernie4_5_MoeConfig):
        super().__init__()
        self.top_k, self.norm_min = config.moe_k, config.moe_norm_min
        self.gate = nn.Linear(config.hidden_size, config.moe_num_experts, bias_attr=False)
        self.moe_statics = Ernie4_5_MoeStatics(config)
        self.experts = nn.LayerList(
            [
                Ernie4_5_MoeMLP(config, config.moe_intermediate_size, plan_prefix="layers.*.mlp.experts.*")
                for _ in range(config.moe_num_experts)
            ]
        )
        self.shared_experts = None
        if config.moe_num_shared_experts > 0:
            width = config.moe_intermediate_size * config.moe_num_shared_experts
            self.shared_experts = Ernie4_5_MoeMLP(config, width, plan_prefix="layers.*.mlp.shared_experts")

    def route(self, tokens: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """(indices, weights), each [tokens, moe_k], for tokens [n, hidden]."""
        probs = F.softmax(self.gate(tokens.astype("float32")), axis=-1)
        indices = paddle.topk(probs + self.moe_statics.e_score_correction_bias, self.top_k)[1]
        weights = paddle.take_along_axis(probs, indices, axis=1)
        return indices, weights / weights.sum(-1, keepdim=True).clip(min=self.norm_min)

    def forward(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        tokens = hidden_states.reshape([-1, hidden_states.shape[-1]])
        indices, weights = self.route(tokens)
        output = combine_experts(self.experts, tokens, indices, weights.astype(tokens.dtype))
        if self.shared_experts is not None:
            output = output + self.shared_experts(tokens)
        return output.reshape(hidden_states.shape)


class Ernie4_5_MoeDecoderLayer(Ernie4_5DecoderLayer):
    def __init__(self, config: Ernie4_5_MoeConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.mlp = Ernie4_5_MoeSparseMoeBlock(config) if is_moe_layer(config, layer_idx) else Ernie4_5_MoeMLP(config)


class Ernie4_5_MoeMLP(Ernie4_5MLP):
    pass


class Ernie4_5_MoePretrainedModel(Ernie4_5PretrainedModel):
    _checkpoint_skips: ClassVar[dict[str, str]] = {
        r"(^|\.)rotary_emb\.inv_freq$": "a buffer older HF checkpoints carry; recomputed from the config",
        r"(^|\.)mtp": "ERNIE 4.5's multi-token-prediction weights, which HF's model does not load either",
    }

    @classmethod
    def _layer_param_actions(cls, config: Ernie4_5_MoeConfig, layer_idx: int) -> dict[str, str | None]:
        actions = super()._layer_param_actions(config, layer_idx)
        if not is_moe_layer(config, layer_idx):
            return actions
        # Every expert (and the shared experts) holds the dense MLP's parameters, biases included.
        mlp = {name[len("mlp.") :]: a for name, a in actions.items() if name.startswith("mlp.")}
        actions = {name: a for name, a in actions.items() if not name.startswith("mlp.")}
        experts = [f"experts.{e}" for e in range(config.moe_num_experts)]
        experts += ["shared_experts"] if config.moe_num_shared_experts > 0 else []
        actions |= {f"mlp.{expert}.{name}": a for expert in experts for name, a in mlp.items()}
        return actions | {"mlp.gate.weight": "transpose", "mlp.moe_statics.e_score_correction_bias": None}

    @classmethod
    def _head_param_actions(cls, config: Ernie4_5_MoeConfig) -> dict[str, str | None]:
        actions = super()._head_param_actions(config)
        return actions | {"lm_head.bias": None} if actions and config.use_bias else actions


class Ernie4_5_MoeModel(Ernie4_5Model):
    pass


class Ernie4_5_MoeForCausalLM(Qwen2MoeForCausalLM):
    def __init__(self, config: Ernie4_5_MoeConfig):
        super().__init__(config)
        if config.use_bias:  # HF's MoE lm_head has a bias with use_bias (the dense model's never does)
            self.lm_head = build_linear(
                config.hidden_size, config.vocab_size, config, self._tp_plan["lm_head"], bias=True
            )
