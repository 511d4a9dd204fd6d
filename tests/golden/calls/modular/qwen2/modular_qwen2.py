from generated.llama.modeling_llama import LlamaLayer, LlamaNorm


class Qwen2Norm(LlamaNorm):
    def __init__(self, size, eps=1e-5, **super_kwargs):
        super().__init__(size, eps, **super_kwargs)
        del self.cache
        self.offset = 1.0

    def forward(self, x):
        return self.shifted(x)

    def shifted(self, x):
        base = [v * self.scale + self.eps for v in x]
        return [v + self.offset for v in base]


class Qwen2Layer(LlamaLayer):
    def __init__(self, config, layer_idx=0):
        super().__init__(config, layer_idx, prefix="qwen")
        self.width = config.hidden_size * 3

    def forward(self, x, shift=1.0):
        scaled = [2 * v for v in x]
        return super().forward(scaled, shift=shift)

    def describe(self):
        text = super().describe()
        return text.upper()

    @classmethod
    def param_names(cls, config):
        names = super().param_names(config)
        return names | {"bias": None}
