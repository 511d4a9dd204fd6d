from generated.qwen2.configuration_qwen2 import Qwen2Config
from generated.qwen2.modeling_qwen2 import Qwen2MLP, Qwen2Model


class Qwen2MoeConfig(Qwen2Config):
    model_type = "qwen2_moe"

    def __init__(self, experts=4, **super_kwargs):
        super().__init__(experts=experts, **super_kwargs)


class Qwen2MoeMLP(Qwen2MLP):
    def forward(self, x):
        return self.experts_out(x)

    def experts_out(self, x):
        return sum((x + e) * 2 + self.hidden for e in range(2))


class Qwen2MoeModel(Qwen2Model):
    pass
