from generated.llama.modeling_llama import LlamaAttention, LlamaLayer


class Qwen2Attention(LlamaAttention):
    """Calls the parent explicitly: the escape hatch keeps LlamaAttention as a real base class."""

    def forward(self, x):
        return LlamaAttention.forward(self, x) + 100


class Qwen2Layer(LlamaLayer):
    pass
