class LlamaConfig:
    def __init__(self, hidden=4):
        self.hidden = hidden


class LlamaMLP:
    def __init__(self, config):
        self.width = config.hidden * 2
        self.kind = "mlp"


class LlamaLayer:
    def __init__(self, config, layer_idx):
        self.config = config
        self.layer_idx = layer_idx
        self.mlp = LlamaMLP(config)
        self.mlp.extra = config.hidden + 1

    def grid(self, height, width):
        rows = height // 2
        cols = width // 2
        return [rows, cols]


class LlamaEmbed:
    def __init__(self, config):
        count = config.hidden + 1
        self.table = list(range(count))
        self.size = len(self.table)


class LlamaHead:
    def tag(self, suffix):
        return "llama" + suffix


class LlamaBag(dict):
    def __init__(self, config):
        super().__init__(size=config.hidden)
