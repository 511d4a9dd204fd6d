"""Gemma 2: Gemma with norms after attention and around the MLP, attention-logit and final-logit softcapping,
``query_pre_attn_scalar`` as the attention scale, and sliding-window layers alternating with full ones
(``layer_types``)."""

import paddle

from generated.gemma.configuration_gemma import GemmaConfig
from generated.gemma.modeling_gemma import (
    GemmaAttention,
    GemmaDecoderLayer,
    GemmaForCausalLM,
    GemmaModel,
    GemmaPretrainedModel,
    GemmaRMSNorm,
)
from modbuild.nn.attention import soft_cap
from modbuild.nn.masks import check_layer_types, default_layer_types, layer_position_embeddings, layer_sliding_window
from modbuild.nn.parallel import mark_sequence_parallel, tied_logits
from modbuild.nn.recompute import maybe_recompute


class Gemma2Config(GemmaConfig):
    """HF ``Gemma2Config``: the MLP's activation is ``hidden_activation`` (``hidden_act`` follows it)."""

    model_type = "gemma2"

    def __init__(
        self,
        vocab_size: int = 256000,
        hidden_size: int = 2304,
        intermediate_size: int = 9216,
        num_hidden_layers: int = 26,
        num_attention_heads: int = 8,
        num_key_value_heads: int | None = 4,
        hidden_activation: str = "gelu_pytorch_tanh",
        hidden_act: str | None = None,
        query_pre_attn_scalar: float = 256,
        sliding_window: int | None = 4096,
        layer_types: list[str] | None = None,
        final_logit_softcapping: float | None = 30.0,
        attn_logit_softcapping: float | None = 50.0,
        **super_kwargs,
    ):
        super().__init__(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            hidden_act=hidden_activation,
            hidden_activation=hidden_activation,
            **super_kwargs,
        )
        self.query_pre_attn_scalar = query_pre_attn_scalar
        self.sliding_window = sliding_window
        self.final_logit_softcapping = final_logit_softcapping
        self.attn_logit_softcapping = attn_logit_softcapping
        self.layer_types = check_layer_types(
            layer_types or default_layer_types(num_hidden_layers, 2), num_hidden_layers
        )


class Gemma2RMSNorm(GemmaRMSNorm):
    pass


class Gemma2Attention(GemmaAttention):
    def __init__(self, config: Gemma2Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.scaling = config.query_pre_attn_scalar**-0.5
        self.sliding_window = layer_sliding_window(config, layer_idx)
        # Read by the attention function, which caps the scaled logits before the mask.
        self.attn_logit_softcapping = config.attn_logit_softcapping


class Gemma2DecoderLayer(GemmaDecoderLayer):
    def __init__(self, config: Gemma2Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.attention_type = config.layer_types[layer_idx]
        self.pre_feedforward_layernorm = Gemma2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_feedforward_layernorm = Gemma2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        mark_sequence_parallel(self.pre_feedforward_layernorm, config)
        mark_sequence_parallel(self.post_feedforward_layernorm, config)

    def forward(
        self,
        hidden_states: paddle.Tensor,
        position_embeddings: tuple[paddle.Tensor, paddle.Tensor] | dict,
        attention_mask: paddle.Tensor,
        past_key_value: tuple[paddle.Tensor, paddle.Tensor] | None = None,
        use_cache: bool = False,
    ) -> tuple[paddle.Tensor, tuple[paddle.Tensor, paddle.Tensor] | None]:
        residual = hidden_states
        hidden_states, present = maybe_recompute(
            self,
            "full_attn",
            self.self_attn,
            self.input_layernorm(hidden_states),
            layer_position_embeddings(position_embeddings, self.attention_type),
            attention_mask,
            past_key_value,
            use_cache,
        )
        hidden_states = residual + self.post_attention_layernorm(hidden_states)

        residual = hidden_states
        hidden_states = self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(hidden_states)))
        return residual + hidden_states, present


class Gemma2PretrainedModel(GemmaPretrainedModel):
    @classmethod
    def _layer_param_actions(cls, config: Gemma2Config, layer_idx: int) -> dict[str, str | None]:
        actions = super()._layer_param_actions(config, layer_idx)
        return actions | {"pre_feedforward_layernorm.weight": None, "post_feedforward_layernorm.weight": None}


class Gemma2Model(GemmaModel):
    pass


class Gemma2ForCausalLM(GemmaForCausalLM):
    def compute_logits(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        if self.config.tie_word_embeddings:
            logits = tied_logits(hidden_states, self.get_input_embeddings().weight, self.config)
        else:
            logits = self.lm_head(hidden_states)
        return soft_cap(logits, self.config.final_logit_softcapping)
