from generated.llama.modeling_llama import LlamaBlock, LlamaLoggingMixin


class MistralBlock(LlamaBlock, LlamaLoggingMixin):
    kind = "windowed"
    legacy_flag = AttributeError()

    @property
    def size(self):
        return self._size + 100

    @staticmethod
    def act(x):
        return abs(x)

    def forward(self, x):
        return [self.act(v) + self.size for v in x]

    def legacy(self):
        raise AttributeError("Mistral has no legacy path")
