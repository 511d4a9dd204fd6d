"""Gemma: Llama with (1 + w) RMSNorm, embeddings scaled by sqrt(hidden_size), a tanh-GeLU MLP and tied embeddings."""

import paddle
from paddle import nn

from generated.llama.configuration_llama import LlamaConfig
from generated.llama.modeling_llama import LlamaForCausalLM, LlamaModel, LlamaRMSNorm


class GemmaConfig(LlamaConfig):
    """``hidden_activation`` is kept for HF config files; as in HF, the MLP uses ``hidden_act``."""

    model_type = "gemma"

    def __init__(
        self,
        vocab_size: int = 256000,
        hidden_size: int = 3072,
        intermediate_size: int = 24576,
        num_hidden_layers: int = 28,
        num_attention_heads: int = 16,
        num_key_value_heads: int | None = 16,
        head_dim: int | None = 256,
        hidden_act: str = "gelu_pytorch_tanh",
        hidden_activation: str | None = None,
        max_position_embeddings: int = 8192,
        pad_token_id: int | None = 0,
        eos_token_id: int = 1,
        bos_token_id: int = 2,
        tie_word_embeddings: bool = True,
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
            hidden_act=hidden_act,
            max_position_embeddings=max_position_embeddings,
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
            bos_token_id=bos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **super_kwargs,
        )
        self.hidden_activation = hidden_activation


class GemmaRMSNorm(LlamaRMSNorm):
    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__(hidden_size, eps)
        self.weight = self.create_parameter([hidden_size], default_initializer=nn.initializer.Constant(0.0))

    def forward(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        """Scaled by ``1 + weight`` (the weight starts at 0), in float32."""
        normed = hidden_states.astype("float32")
        normed = normed * paddle.rsqrt(normed.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return (normed * (1.0 + self.weight.astype("float32"))).astype(hidden_states.dtype)


class GemmaModel(LlamaModel):
    def input_embeddings(self, input_ids: paddle.Tensor | None, inputs_embeds: paddle.Tensor | None) -> paddle.Tensor:
        hidden_states = super().input_embeddings(input_ids, inputs_embeds)
        # HF rounds the normalizer to the hidden dtype first (it matters in bf16).
        return hidden_states * paddle.to_tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)


class GemmaForCausalLM(LlamaForCausalLM):
    pass
