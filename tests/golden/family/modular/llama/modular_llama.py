def scale(x):
    return x * 2


class LlamaConfig:
    model_type = "llama"

    def __init__(self, hidden=2, experts=0):
        self.hidden = hidden
        self.experts = experts


class LlamaMLP:
    def __init__(self, config):
        self.hidden = config.hidden

    def forward(self, x):
        return scale(x) + self.hidden


class LlamaAttention:
    def forward(self, x):
        return x + 1


class LlamaLayer:
    def __init__(self, config):
        self.attn = LlamaAttention()
        self.mlp = LlamaMLP(config)

    def forward(self, x):
        return self.mlp.forward(self.attn.forward(x))


class LlamaModel:
    base_model_prefix = "llama"

    def __init__(self, config):
        self.config = config
        self.layers = [LlamaLayer(config) for _ in range(2)]

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x
