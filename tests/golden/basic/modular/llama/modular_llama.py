"""A pure-Python stand-in for a model family: renaming, implicit overrides, dependencies."""

import math
import os.path

try:
    from _no_such_fast_kernels import fused_scale
except ImportError:

    def fused_scale(x, factor):
        return x * factor


LLAMA_SCALE = 2.0
UNUSED_CONSTANT = os.path.sep


def rotate_half(values):
    return [-v for v in reversed(values)]


def unused_helper():
    return UNUSED_CONSTANT


class LlamaConfig:
    model_type = "llama"

    def __init__(self, hidden_size=4, rope_type="llama3", bias=False):
        self.hidden_size = hidden_size
        self.rope_type = rope_type
        self.bias = bias


class Llama3RotaryEmbedding:
    """Keeps its name: `Llama3` is a different word than `Llama`."""

    def __init__(self, config):
        self.kind = config.rope_type

    def forward(self, values):
        return rotate_half(values)


class LlamaAttention:
    def __init__(self, config, layer_idx=None):
        self.config = config
        self.layer_idx = layer_idx
        self.scale = math.sqrt(LLAMA_SCALE)
        self.rotary = Llama3RotaryEmbedding(config)

    def forward(self, values):
        rotated = self.rotary.forward(values)
        return [fused_scale(v, self.scale) for v in rotated]


class LlamaDecoderLayer:
    def __init__(self, config, layer_idx):
        self.self_attn = LlamaAttention(config, layer_idx)

    def forward(self, values):
        return self.self_attn.forward(values)


class LlamaPreTrainedModel:
    base_model_prefix = "llama"
    mapping_prefix = "llama."
    architectures_key = "LlamaModel"


class LlamaModel(LlamaPreTrainedModel):
    def __init__(self, config):
        self.layers = [LlamaDecoderLayer(config, i) for i in range(2)]

    def forward(self, values):
        for layer in self.layers:
            values = layer.forward(values)
        return values


class LlamaForCausalLM(LlamaPreTrainedModel):
    def __init__(self, config):
        self.llama = LlamaModel(config)

    def forward(self, values):
        return sum(self.llama.forward(values))

    def state_keys(self):
        return [f"{self.base_model_prefix}.layers.{i}" for i in range(len(self.llama.layers))]
