"""A child written in HF's modular dialect: every construct here has an HF meaning that differs from Python's."""

from ..llama.modeling_llama import LlamaLayer, LlamaModel, LlamaNorm
from ..llama.configuration_llama import LlamaConfig
from ..mistral.modeling_mistral import MistralHead, rotate  # noqa: F401  explicit import: mistral's rotate


class Qwen2Config(LlamaConfig):
    model_type = "qwen2"
    flavour = "dialect"  # a new class attribute: with the parent's, before the methods

    def __init__(self, hidden=8, fused=True, **kwargs):
        super().__init__(hidden=hidden, fused=fused, **kwargs)  # the base class's __init__ runs first
        del self.missing  # nothing to remove: a dropped marker


class Qwen2Layer(LlamaLayer):
    def __init__(self, config, idx=0, scale=3):
        super().__init__()  # config and idx are the child's own
        self.scale = scale  # an attribute named like the local that the next line reads: no conflict
        self.width = config.hidden * scale  # replaces the parent's in place: span sees it

    def describe(self):
        return "qwen2>" + LlamaLayer.describe()  # the implementation above the parent's

    def forward(self, xs):
        return [2 * v for v in super().forward(xs)]  # hoisted into a local, then unrolled


class Qwen2Model(LlamaModel):
    def __init__(self, config):
        super().__init__(config)
        self.head = "head"  # post_init runs last, so it sees the head

    def scale(self):
        super().scale()  # a closing bare call returns what the parent returns


class Qwen2TextNorm(LlamaNorm):  # the only child of LlamaNorm, under another name: it stands for Qwen2Norm
    def scale(self):
        return 2


class Qwen2Head(MistralHead):  # only mistral's code uses `shift`, which llama (imported first) defines too
    pass
