class LlamaConfig:
    def __init__(self, hidden_size=4, heads=2, eps=1e-6):
        self.hidden_size = hidden_size
        self.heads = heads
        self.eps = eps


class LlamaNorm:
    def __init__(self, size, eps=1e-6, *, scale=1.0):
        self.size = size
        self.eps = eps
        self.scale = scale
        self.cache = {}

    def forward(self, x):
        return [v * self.scale + self.eps for v in x]


class LlamaLayer:
    def __init__(self, config, layer_idx=0, prefix="layer"):
        super().__init__()
        self.name = f"{prefix}.{layer_idx}"
        self.norm = LlamaNorm(config.hidden_size, config.eps)
        self.width = config.hidden_size * 2
        self.keep = self.width + 1

    def forward(self, x, shift=0.0):
        y = self.norm.forward(x)
        return [v + shift for v in y]

    def describe(self):
        parts = [self.name, str(self.width)]
        return "/".join(parts)

    @classmethod
    def param_names(cls, config):
        names = {f"w{i}": None for i in range(config.heads)}
        return names

    def two_arg(self):
        return super(LlamaLayer, self).__repr__() is not None
