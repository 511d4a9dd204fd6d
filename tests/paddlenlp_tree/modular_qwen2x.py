"""Qwen2 written against PaddleNLP's own Llama (the PaddleNLP package layout)."""

from ..linear_utils import Linear
from ..llama.configuration import LlamaConfig
from ..llama.modeling import LlamaAttention, LlamaForCausalLM, LlamaModel, LlamaPretrainedModel


class Qwen2xConfig(LlamaConfig):
    def __init__(
        self,
        vocab_size=151936,
        attention_dropout=0.0,
        fuse_attention_qkv=False,
        fuse_attention_ffn=False,
        **super_kwargs,
    ):
        super().__init__(
            vocab_size=vocab_size,
            fuse_attention_qkv=fuse_attention_qkv,
            fuse_attention_ffn=fuse_attention_ffn,
            **super_kwargs,
        )
        self.attention_dropout = attention_dropout  # stored as PaddleNLP's Qwen2Config does; inference ignores it
        # PretrainedConfig.__init__ (called by LlamaConfig's) resets both to False; Qwen2Config keeps them
        self.fuse_attention_qkv = fuse_attention_qkv
        self.fuse_attention_ffn = fuse_attention_ffn


class Qwen2xAttention(LlamaAttention):
    """Llama attention with biased q/k/v projections, on a single device."""

    def __init__(self, config: Qwen2xConfig, layerwise_recompute: bool = False, skip_recompute_ops=None):
        super().__init__(config, layerwise_recompute, skip_recompute_ops)
        if config.tensor_parallel_degree > 1:
            raise NotImplementedError("Qwen2x: biased q/k/v projections are only built for a single device")
        kv_size = config.num_key_value_heads * self.head_dim
        if self.fuse_attention_qkv:
            self.qkv_proj = Linear(self.hidden_size, self.hidden_size + 2 * kv_size)
        else:
            self.q_proj = Linear(self.hidden_size, self.hidden_size, bias_attr=True)
            self.k_proj = Linear(self.hidden_size, kv_size, bias_attr=True)
            self.v_proj = Linear(self.hidden_size, kv_size, bias_attr=True)


class Qwen2xPretrainedModel(LlamaPretrainedModel):
    pass


class Qwen2xModel(LlamaModel):
    pass


class Qwen2xForCausalLM(LlamaForCausalLM):
    pass
