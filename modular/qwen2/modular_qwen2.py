"""Qwen2: Llama with q/k/v bias and sliding-window attention on the upper layers (HF semantics)."""

from generated.llama.configuration_llama import LlamaConfig
from generated.llama.modeling_llama import (
    LlamaAttention,
    LlamaForCausalLM,
    LlamaModel,
    LlamaPretrainedModel,
)
from modbuild.nn.parallel import build_linear


class Qwen2Config(LlamaConfig):
    model_type = "qwen2"

    def __init__(
        self,
        vocab_size: int = 151936,
        hidden_size: int = 4096,
        intermediate_size: int = 22016,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = 32,
        max_position_embeddings: int = 32768,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        use_sliding_window: bool = False,
        sliding_window: int | None = 4096,
        max_window_layers: int = 28,
        layer_types: list[str] | None = None,
        **super_kwargs,
    ):
        super().__init__(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            max_position_embeddings=max_position_embeddings,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            **super_kwargs,
        )
        self.use_sliding_window = use_sliding_window
        self.sliding_window = sliding_window if use_sliding_window else None
        self.max_window_layers = max_window_layers
        self.layer_types = layer_types or [
            "sliding_attention" if self.sliding_window is not None and i >= max_window_layers else "full_attention"
            for i in range(num_hidden_layers)
        ]


class Qwen2Attention(LlamaAttention):
    def __init__(self, config: Qwen2Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.sliding_window = config.sliding_window if config.layer_types[layer_idx] == "sliding_attention" else None
        self.q_proj = build_linear(
            config.hidden_size,
            config.num_attention_heads * self.head_dim,
            config,
            config.base_model_tp_plan.get("layers.*.self_attn.q_proj"),
            bias=True,
        )
        self.k_proj = build_linear(
            config.hidden_size,
            config.num_key_value_heads * self.head_dim,
            config,
            config.base_model_tp_plan.get("layers.*.self_attn.k_proj"),
            bias=True,
        )
        self.v_proj = build_linear(
            config.hidden_size,
            config.num_key_value_heads * self.head_dim,
            config,
            config.base_model_tp_plan.get("layers.*.self_attn.v_proj"),
            bias=True,
        )


class Qwen2PretrainedModel(LlamaPretrainedModel):
    @classmethod
    def _layer_param_actions(cls, config: Qwen2Config, layer_idx: int) -> dict[str, str | None]:
        actions = super()._layer_param_actions(config, layer_idx)
        return actions | {f"self_attn.{p}_proj.bias": None for p in "qkv"}


class Qwen2Model(LlamaModel):
    pass


class Qwen2ForCausalLM(LlamaForCausalLM):
    pass
