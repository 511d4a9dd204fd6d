"""Gemma 3 (text): Gemma 2 with per-head RMSNorm on q and k, a local RoPE base for the sliding layers (the global
RoPE, with ``rope_scaling``, for the full ones), five sliding layers to a full one (``sliding_window_pattern``),
and no attention-logit softcapping (HF keeps the config value but never applies it). HF's ``model_type`` is
``gemma3_text``."""

import copy

import paddle

from generated.gemma2.configuration_gemma2 import Gemma2Config
from generated.gemma2.modeling_gemma2 import (
    Gemma2Attention,
    Gemma2ForCausalLM,
    Gemma2Model,
    Gemma2PretrainedModel,
    Gemma2RMSNorm,
    Gemma2RotaryEmbedding,
)
from modbuild.nn.masks import RotaryPerLayerType, default_layer_types
from modbuild.nn.parallel import sum_grads_over_ranks


class Gemma3Config(Gemma2Config):
    """HF ``Gemma3TextConfig``. Without ``layer_types``, every ``sliding_window_pattern``-th layer is full."""

    model_type = "gemma3_text"

    def __init__(
        self,
        vocab_size: int = 262_208,
        num_hidden_layers: int = 26,
        max_position_embeddings: int = 131_072,
        rope_theta: float = 1_000_000.0,
        layer_types: list[str] | None = None,
        sliding_window_pattern: int = 6,
        final_logit_softcapping: float | None = None,
        attn_logit_softcapping: float | None = None,
        rope_local_base_freq: float = 10_000.0,
        **super_kwargs,
    ):
        super().__init__(
            vocab_size=vocab_size,
            num_hidden_layers=num_hidden_layers,
            max_position_embeddings=max_position_embeddings,
            rope_theta=rope_theta,
            layer_types=layer_types or default_layer_types(num_hidden_layers, sliding_window_pattern),
            final_logit_softcapping=final_logit_softcapping,
            attn_logit_softcapping=attn_logit_softcapping,
            **super_kwargs,
        )
        self.sliding_window_pattern = sliding_window_pattern
        self.rope_local_base_freq = rope_local_base_freq


class Gemma3Attention(Gemma2Attention):
    def __init__(self, config: Gemma3Config, layer_idx: int):
        super().__init__(config, layer_idx)
        # HF's Gemma 3 stores attn_logit_softcapping in its config but never passes it to the attention.
        self.attn_logit_softcapping = None
        self.q_norm = Gemma2RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = Gemma2RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        # Each rank normalises only its own heads with these shared weights.
        sum_grads_over_ranks(self.q_norm, config)
        sum_grads_over_ranks(self.k_norm, config)

    def project_qkv(
        self, hidden_states: paddle.Tensor, hidden_shape: list[int]
    ) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        query_states, key_states, value_states = super().project_qkv(hidden_states, hidden_shape)
        return self.q_norm(query_states), self.k_norm(key_states), value_states


class Gemma3PretrainedModel(Gemma2PretrainedModel):
    @classmethod
    def _layer_param_actions(cls, config: Gemma3Config, layer_idx: int) -> dict[str, str | None]:
        actions = super()._layer_param_actions(config, layer_idx)
        return actions | {"self_attn.q_norm.weight": None, "self_attn.k_norm.weight": None}


def local_rope_config(config: Gemma3Config) -> Gemma3Config:
    """The sliding layers' RoPE: the local base and no scaling (HF's ``rotary_emb_local``)."""
    local = copy.deepcopy(config)
    local.rope_theta, local.rope_scaling = config.rope_local_base_freq, None
    return local


class Gemma3Model(Gemma2Model):
    def __init__(self, config: Gemma3Config):
        super().__init__(config)
        # Full layers rotate with rope_theta and rope_scaling, sliding ones with the local base.
        self.rotary_emb = RotaryPerLayerType(
            {
                "full_attention": Gemma2RotaryEmbedding(config),
                "sliding_attention": Gemma2RotaryEmbedding(local_rope_config(config)),
            }
        )

    def input_embeddings(self, input_ids: paddle.Tensor | None, inputs_embeds: paddle.Tensor | None) -> paddle.Tensor:
        # HF scales inside its embedding layer, so embeddings passed in are used as they are.
        if inputs_embeds is not None:
            return inputs_embeds
        hidden_states = self.embed_tokens(input_ids)
        return hidden_states * paddle.to_tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)


class Gemma3ForCausalLM(Gemma2ForCausalLM):
    pass
