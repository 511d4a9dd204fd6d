"""A root model for the HF-dialect golden case."""


class BaseConfig:
    def __init__(self, **kwargs):
        self.fused = False  # the base class resets it, as PaddleNLP's PretrainedConfig does
        self.extra = sorted(kwargs)


class LlamaConfig(BaseConfig):
    model_type = "llama"

    def __init__(self, hidden=4, fused=True, **kwargs):
        self.hidden = hidden
        self.fused = fused
        super().__init__(**kwargs)


def rotate(x):
    return -x


def shift(x):  # llama's code never uses it
    return x - 100


class BaseLayer:
    def describe(self):
        return "base"


class LlamaLayer(BaseLayer):
    def __init__(self, config, idx=0):
        self.idx = idx
        self.width = config.hidden * 2
        self.span = self.width + 1

    def describe(self):
        return "llama:" + super().describe()

    def title(self):
        return "A Llama layer, not a LLaMA model"

    def forward(self, xs):
        return [rotate(x) * self.width for x in xs]


class LlamaNorm:
    def scale(self):
        return 1


class LlamaModel:
    def __init__(self, config):
        self.config = config
        self.layers = [LlamaLayer(config, i) for i in range(2)]
        self.norm = LlamaNorm()
        self.post_init()

    def post_init(self):
        self.initialized = [type(layer).__name__ for layer in self.layers] + [hasattr(self, "head")]

    def scale(self):
        return 3
