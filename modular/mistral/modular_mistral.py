"""Mistral: Llama with sliding-window attention on every layer (HF ``MistralConfig.sliding_window``)."""

from generated.llama.configuration_llama import LlamaConfig
from generated.llama.modeling_llama import LlamaAttention, LlamaForCausalLM, LlamaModel


class MistralConfig(LlamaConfig):
    model_type = "mistral"

    def __init__(
        self,
        intermediate_size: int = 14336,
        num_key_value_heads: int | None = 8,
        max_position_embeddings: int = 4096 * 32,
        sliding_window: int | None = 4096,
        **super_kwargs,
    ):
        super().__init__(
            intermediate_size=intermediate_size,
            num_key_value_heads=num_key_value_heads,
            max_position_embeddings=max_position_embeddings,
            **super_kwargs,
        )
        self.sliding_window = sliding_window


class MistralAttention(LlamaAttention):
    def __init__(self, config: MistralConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.sliding_window = config.sliding_window


class MistralModel(LlamaModel):
    pass


class MistralForCausalLM(LlamaForCausalLM):
    pass
