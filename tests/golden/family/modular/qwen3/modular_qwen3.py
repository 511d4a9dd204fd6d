from generated.qwen2.configuration_qwen2 import Qwen2Config
from generated.qwen2.modeling_qwen2 import Qwen2Attention, Qwen2Model


def scale(x):
    return x * 3


class Qwen3Config(Qwen2Config):
    model_type = "qwen3"


class Qwen3Attention(Qwen2Attention):
    def forward(self, x):
        out = super().forward(x)
        return out * 100


class Qwen3Model(Qwen2Model):
    pass
