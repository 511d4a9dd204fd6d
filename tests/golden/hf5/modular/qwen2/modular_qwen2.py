"""HF 5.x dialect rules: super() arguments HF ignores, `del` of a parent's local, a bare super() call
followed by assignments, and `Base.f(self, ...)` for a base the class keeps."""

from generated.llama.configuration_llama import LlamaConfig
from generated.llama.modeling_llama import LlamaBag, LlamaEmbed, LlamaHead, LlamaLayer, LlamaMLP


class Qwen2Config(LlamaConfig):
    pass


class Qwen2MLP(LlamaMLP):
    def __init__(self, config):
        super().__init__(self, config)  # does not fit `(self, config)`: HF ignores it, the body reads `config`
        self.kind = "qwen2"


class Qwen2Layer(LlamaLayer):
    def __init__(self, config):
        super().__init__(config)  # leaves out layer_idx, which the removed line was the only one to read
        del self.layer_idx
        del self.mlp.extra  # removes the parent's `self.mlp.extra = ...`

    def grid(self, height, width):
        super().grid(height, width)
        rows = height // 3  # replaces the parent's `rows = ...` in place; grid returns what the parent returns


class Qwen2Embed(LlamaEmbed):
    def __init__(self, config):
        super().__init__(config)
        del count  # noqa: F821  (removes the parent's local)
        self.table = [0] * config.hidden


class Tagged:
    def tag(self, suffix):
        return "tagged" + suffix


class Qwen2Head(LlamaHead, Tagged):
    def tag(self, suffix):
        return Tagged.tag(self, suffix) + "!"  # HF: `super().tag(suffix)` in the flattened class


class Qwen2Bag(LlamaBag):
    def __init__(self, config):
        dict.__init__(self, kind="qwen2")  # a base of the parent's: `super().__init__(kind="qwen2")` (HF)
