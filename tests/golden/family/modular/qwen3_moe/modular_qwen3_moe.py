from generated.qwen3.configuration_qwen3 import Qwen3Config
from generated.qwen3.modeling_qwen3 import Qwen3Attention, Qwen3Model
from generated.qwen2_moe.modeling_qwen2_moe import Qwen2MoeMLP


class Qwen3MoeConfig(Qwen3Config):
    model_type = "qwen3_moe"


class Qwen3MoeAttention(Qwen3Attention):
    pass


class Qwen3MoeMLP(Qwen2MoeMLP):
    pass


class Qwen3MoeModel(Qwen3Model):
    pass
