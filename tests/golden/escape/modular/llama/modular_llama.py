class LlamaAttention:
    def __init__(self, scale=2):
        self.scale = scale

    def forward(self, x):
        return x * self.scale

    def describe(self):
        return super(LlamaAttention, self).__repr__() is not None


class LlamaLayer:
    def __init__(self):
        self.attn = LlamaAttention()

    def forward(self, x):
        return self.attn.forward(x) + 1
