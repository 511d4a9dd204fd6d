"""GLM (GLM-4-9B): Llama with RoPE on the first ``partial_rotary_factor`` of each head, pairwise (interleaved), q/k/v
biases without an o_proj bias, and one fused ``gate_up_proj`` (HF's Phi-3 MLP).

Under TP the fused projection is split part by part (plan style ``colwise_fused2``): each rank holds its slice of the
gate half and of the up half and chunks them locally, so nothing is replicated and every gradient is local.
"""

from typing import ClassVar

import paddle
from paddle import nn

from generated.llama.configuration_llama import LlamaConfig
from generated.llama.modeling_llama import (
    LlamaAttention,
    LlamaForCausalLM,
    LlamaModel,
    LlamaPretrainedModel,
)
from modbuild.nn.activations import get_activation
from modbuild.nn.parallel import build_linear
from modbuild.nn.rope import RotaryEmbedding, apply_rotary


class GlmConfig(LlamaConfig):
    model_type = "glm"
    base_model_tp_plan: ClassVar[dict[str, str]] = {
        "embed_tokens": "vocab",
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_up_proj": "colwise_fused2",
        "layers.*.mlp.down_proj": "rowwise",
    }

    def __init__(
        self,
        vocab_size: int = 151552,
        hidden_size: int = 4096,
        intermediate_size: int = 13696,
        num_hidden_layers: int = 40,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = 2,
        partial_rotary_factor: float = 0.5,
        head_dim: int | None = 128,
        max_position_embeddings: int = 131072,
        rms_norm_eps: float = 0.00000015625,
        pad_token_id: int | None = 151329,
        eos_token_id: int | list[int] = [151329, 151336, 151338],  # noqa: B006 - HF's default, never mutated
        bos_token_id: int | None = None,
        attention_bias: bool = True,
        **super_kwargs,
    ):
        super().__init__(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            head_dim=head_dim,
            max_position_embeddings=max_position_embeddings,
            rms_norm_eps=rms_norm_eps,
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
            bos_token_id=bos_token_id,
            attention_bias=attention_bias,
            **super_kwargs,
        )
        self.partial_rotary_factor = partial_rotary_factor


class GlmRotaryEmbedding(RotaryEmbedding):
    """cos/sin over the first ``partial_rotary_factor`` of each head, each frequency twice in a row."""

    interleaved = True


def apply_rotary_pos_emb(
    q: paddle.Tensor, k: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor, unsqueeze_dim: int = 2
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Rotate the first rotary features of q/k [batch, seq, heads, head_dim] pairwise; the rest pass through."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    return apply_rotary(q, cos, sin, interleaved=True), apply_rotary(k, cos, sin, interleaved=True)


class GlmMLP(nn.Layer):
    def __init__(self, config: GlmConfig):
        super().__init__()
        plan, hidden, inter = config.base_model_tp_plan, config.hidden_size, config.intermediate_size
        self.gate_up_proj = build_linear(hidden, 2 * inter, config, plan.get("layers.*.mlp.gate_up_proj"))
        self.down_proj = build_linear(inter, hidden, config, plan.get("layers.*.mlp.down_proj"))
        self.activation_fn = get_activation(config.hidden_act)

    def forward(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        gate, up_states = self.gate_up_proj(hidden_states).chunk(2, axis=-1)
        return self.down_proj(up_states * self.activation_fn(gate))


class GlmAttention(LlamaAttention):
    def __init__(self, config: GlmConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.o_proj = build_linear(
            config.num_attention_heads * self.head_dim,
            config.hidden_size,
            config,
            config.base_model_tp_plan.get("layers.*.self_attn.o_proj"),
        )


class GlmPretrainedModel(LlamaPretrainedModel):
    @classmethod
    def _layer_param_actions(cls, config: GlmConfig, layer_idx: int) -> dict[str, str | None]:
        actions = {f"self_attn.{p}_proj.weight": "transpose" for p in "qkvo"}
        actions |= {"mlp.gate_up_proj.weight": "transpose", "mlp.down_proj.weight": "transpose"}
        actions |= {"input_layernorm.weight": None, "post_attention_layernorm.weight": None}
        if config.attention_bias:  # q/k/v only: o_proj has none
            actions |= {f"self_attn.{p}_proj.bias": None for p in "qkv"}
        return actions


class GlmModel(LlamaModel):
    pass


class GlmForCausalLM(LlamaForCausalLM):
    pass
