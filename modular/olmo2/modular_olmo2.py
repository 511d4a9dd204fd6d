"""OLMo-2: Llama with RMSNorm over the whole q and k projections (all heads, before RoPE), norms after attention and
after the MLP instead of before them, and OLMo-2's RMSNorm (weight applied before the cast back)."""

from typing import ClassVar

import paddle
from paddle import nn

from generated.llama.configuration_llama import LlamaConfig
from generated.llama.modeling_llama import (
    LlamaAttention,
    LlamaForCausalLM,
    LlamaMLP,
    LlamaModel,
    LlamaPretrainedModel,
    LlamaRMSNorm,
)
from modbuild.nn.norms import ShardedRMSNorm
from modbuild.nn.parallel import mark_sequence_parallel
from modbuild.nn.recompute import maybe_recompute
from modbuild.nn.rope import RotaryEmbedding


class Olmo2Config(LlamaConfig):
    model_type = "olmo2"
    # q_norm/k_norm weights are split like the projections they normalise (modbuild.nn.norms.ShardedRMSNorm).
    base_model_tp_plan: ClassVar[dict[str, str]] = {
        "embed_tokens": "vocab",
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
        "layers.*.self_attn.q_norm": "colwise",
        "layers.*.self_attn.k_norm": "colwise",
    }

    def __init__(
        self,
        vocab_size: int = 50304,
        pad_token_id: int | None = 1,
        bos_token_id: int | None = None,
        eos_token_id: int = 50279,
        rms_norm_eps: float = 1e-5,
        **super_kwargs,
    ):
        super().__init__(
            vocab_size=vocab_size,
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            rms_norm_eps=rms_norm_eps,
            **super_kwargs,
        )


class Olmo2RMSNorm(LlamaRMSNorm):
    def forward(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.astype("float32")
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * paddle.rsqrt(variance + self.variance_epsilon)
        return (self.weight * hidden_states).astype(input_dtype)


class Olmo2RotaryEmbedding(RotaryEmbedding):
    """HF's, with its dynamic/longrope updates (``modbuild.nn.rope``)."""


class Olmo2Attention(LlamaAttention):
    def __init__(self, config: Olmo2Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.q_norm = ShardedRMSNorm(config.num_attention_heads * self.head_dim, config.rms_norm_eps, config)
        self.k_norm = ShardedRMSNorm(config.num_key_value_heads * self.head_dim, config.rms_norm_eps, config)

    def project_qkv(
        self, hidden_states: paddle.Tensor, hidden_shape: list[int]
    ) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        """The norms see each token's whole projection (this rank's columns, squares summed over ranks)."""
        return (
            self.q_norm(self.q_proj(hidden_states)).reshape(hidden_shape),
            self.k_norm(self.k_proj(hidden_states)).reshape(hidden_shape),
            self.v_proj(hidden_states).reshape(hidden_shape),
        )


class Olmo2DecoderLayer(nn.Layer):
    """``x + norm(attn(x))``, then ``x + norm(mlp(x))``: no norm before either."""

    def __init__(self, config: Olmo2Config, layer_idx: int):
        super().__init__()
        self.config = config
        self.self_attn = LlamaAttention(config=config, layer_idx=layer_idx)
        self.mlp = LlamaMLP(config)
        self.post_attention_layernorm = Olmo2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_feedforward_layernorm = Olmo2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        mark_sequence_parallel(self.post_attention_layernorm, config)
        mark_sequence_parallel(self.post_feedforward_layernorm, config)

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
            hidden_states,
            position_embeddings,
            attention_mask,
            past_key_value,
            use_cache,
        )
        hidden_states = hidden_states + self.post_attention_layernorm(attn_output)
        return hidden_states + self.post_feedforward_layernorm(self.mlp(hidden_states)), present


class Olmo2PretrainedModel(LlamaPretrainedModel):
    @classmethod
    def _layer_param_actions(cls, config: Olmo2Config, layer_idx: int) -> dict[str, str | None]:
        actions = super()._layer_param_actions(config, layer_idx)
        del actions["input_layernorm.weight"]
        return actions | {
            "self_attn.q_norm.weight": None,
            "self_attn.k_norm.weight": None,
            "post_feedforward_layernorm.weight": None,
        }


class Olmo2Model(LlamaModel):
    pass


class Olmo2ForCausalLM(LlamaForCausalLM):
    pass
