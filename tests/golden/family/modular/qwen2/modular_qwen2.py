from generated.llama.configuration_llama import LlamaConfig
from generated.llama.modeling_llama import LlamaAttention, LlamaModel


class Qwen2Config(LlamaConfig):
    model_type = "qwen2"


class Qwen2Attention(LlamaAttention):
    def forward(self, x):
        return x + 10


class Qwen2Model(LlamaModel):
    pass
