"""GLM-4 (GLM-4-0414): GLM with two more norms per layer, on the attention output and on the MLP output, before
each is added to the residual stream."""

import paddle

from generated.glm.configuration_glm import GlmConfig
from generated.glm.modeling_glm import GlmDecoderLayer, GlmForCausalLM, GlmModel, GlmPretrainedModel, GlmRMSNorm
from modbuild.nn.parallel import mark_sequence_parallel
from modbuild.nn.recompute import maybe_recompute


class Glm4Config(GlmConfig):
    model_type = "glm4"


class Glm4DecoderLayer(GlmDecoderLayer):
    def __init__(self, config: Glm4Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.post_self_attn_layernorm = GlmRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_mlp_layernorm = GlmRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        mark_sequence_parallel(self.post_self_attn_layernorm, config)
        mark_sequence_parallel(self.post_mlp_layernorm, config)

    def forward(
        self,
        hidden_states: paddle.Tensor,
        position_embeddings: tuple[paddle.Tensor, paddle.Tensor],
        attention_mask: paddle.Tensor,
        past_key_value: tuple[paddle.Tensor, paddle.Tensor] | None = None,
        use_cache: bool = False,
    ) -> tuple[paddle.Tensor, tuple[paddle.Tensor, paddle.Tensor] | None]:
        attn_output, present = maybe_recompute(
            self,
            "full_attn",
            self.self_attn,
            self.input_layernorm(hidden_states),
            position_embeddings,
            attention_mask,
            past_key_value,
            use_cache,
        )
        hidden_states = hidden_states + self.post_self_attn_layernorm(attn_output)
        mlp_output = self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states + self.post_mlp_layernorm(mlp_output), present


class Glm4PretrainedModel(GlmPretrainedModel):
    @classmethod
    def _layer_param_actions(cls, config: Glm4Config, layer_idx: int) -> dict[str, str | None]:
        actions = super()._layer_param_actions(config, layer_idx)
        return actions | {"post_self_attn_layernorm.weight": None, "post_mlp_layernorm.weight": None}


class Glm4Model(GlmModel):
    pass


class Glm4ForCausalLM(GlmForCausalLM):
    pass
