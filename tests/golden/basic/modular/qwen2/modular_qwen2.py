from generated.llama.configuration_llama import LlamaConfig
from generated.llama.modeling_llama import LlamaAttention, LlamaForCausalLM, LlamaModel


def rotate_half(values):
    """Qwen2's own rotation replaces Llama's everywhere, inherited code included."""
    return [2 * v for v in values]


class Qwen2Config(LlamaConfig):
    model_type = "qwen2"


class Qwen2Attention(LlamaAttention):
    def __init__(self, config, layer_idx=None):
        super().__init__(config, layer_idx)
        self.bias = [0.5 for _ in range(config.hidden_size)]

    def forward(self, values):
        out = super().forward(values)
        return [o + b for o, b in zip(out, self.bias)]


class Qwen2Model(LlamaModel):
    pass


class Qwen2ForCausalLM(LlamaForCausalLM):
    pass
