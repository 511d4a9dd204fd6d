"""Parents used as a namespace, and imported with the relative HF-style form."""

from ..llama import modeling_llama


class MistralMLP(modeling_llama.LlamaMLP):
    def forward(self, x):
        return x * self.width * 10


class MistralModel(modeling_llama.LlamaModel):
    pass
