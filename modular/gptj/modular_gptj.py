"""GPT-J: attention and MLP in parallel from one LayerNorm, partial interleaved RoPE, biased MLP and lm_head.

Parameters keep Llama's layout (``embed_tokens``, ``layers.N.input_layernorm``, ``self_attn.o_proj``, ``norm``);
``_hf_renames`` maps them to HF's checkpoint names (``transformer.wte``, ``h.N.ln_1``, ``attn.out_proj``, ``ln_f``).
"""

from typing import ClassVar

import paddle
import paddle.nn.functional as F
from paddle import nn
from paddlenlp.transformers.configuration_utils import PretrainedConfig

from generated.llama.modeling_llama import (
    LlamaAttention,
    LlamaForCausalLM,
    LlamaModel,
    LlamaPretrainedModel,
    LlamaRMSNorm,
)
from modbuild.nn.activations import get_activation
from modbuild.nn.parallel import build_linear, mark_sequence_parallel
from modbuild.nn.recompute import RECOMPUTE_GRANULARITIES, maybe_recompute
from modbuild.nn.rope import apply_interleaved_rotary, inverse_frequencies


class GPTJConfig(PretrainedConfig):
    """HF ``GPTJConfig`` fields and defaults, plus the PaddleNLP switches Llama has (``use_flash_attention``,
    ``recompute``, ``recompute_granularity``, ``sequence_parallel``)."""

    model_type = "gptj"
    # HF's aliases, then the Llama names of GPT-J fields that the inherited Llama code reads.
    attribute_map: ClassVar[dict[str, str]] = {
        "max_position_embeddings": "n_positions",
        "hidden_size": "n_embd",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
        "attention_dropout": "attn_pdrop",
        "rms_norm_eps": "layer_norm_epsilon",
    }
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["past_key_values"]
    base_model_tp_plan: ClassVar[dict[str, str]] = {
        "embed_tokens": "vocab",
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.fc_in": "colwise",
        "layers.*.mlp.fc_out": "rowwise",
    }

    def __init__(
        self,
        vocab_size: int = 50400,
        n_positions: int = 2048,
        n_embd: int = 4096,
        n_layer: int = 28,
        n_head: int = 16,
        rotary_dim: int | None = 64,
        n_inner: int | None = None,
        activation_function: str = "gelu_new",
        resid_pdrop: float = 0.0,
        embd_pdrop: float = 0.0,
        attn_pdrop: float = 0.0,
        layer_norm_epsilon: float = 1e-5,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        bos_token_id: int = 50256,
        eos_token_id: int = 50256,
        tie_word_embeddings: bool = False,
        use_flash_attention: bool = False,
        recompute: bool = False,
        recompute_granularity: str = "full",
        sequence_parallel: bool = False,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.n_positions = n_positions
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.n_head = n_head
        self.rotary_dim = rotary_dim
        self.n_inner = n_inner
        self.activation_function = activation_function
        self.resid_pdrop = resid_pdrop
        self.embd_pdrop = embd_pdrop
        self.attn_pdrop = attn_pdrop
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        # After the fields: a llama-named keyword (hidden_size=...) reaches its GPT-J field through attribute_map.
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            use_cache=use_cache,
            use_flash_attention=use_flash_attention,
            recompute=recompute,
            recompute_granularity=recompute_granularity,
            sequence_parallel=sequence_parallel,
            **kwargs,
        )
        # Read by the Llama attention GPT-J reuses; derived, so other values (a llama-style config) are overridden.
        self.head_dim = self.n_embd // self.n_head
        self.num_key_value_heads = self.n_head
        self.attention_bias = False
        if tie_word_embeddings:
            raise ValueError("tie_word_embeddings=True is unsupported: GPT-J's lm_head has its own weight and bias")
        if self.recompute_granularity not in RECOMPUTE_GRANULARITIES:
            raise ValueError(f"recompute_granularity must be one of {RECOMPUTE_GRANULARITIES}")


class GPTJRotaryEmbedding(nn.Layer):
    """HF's ``create_sinusoidal_positions``: base 10000 over the first ``rotary_dim`` features of each head (all of
    them when it is None), angles ``position * inv_freq`` in float32."""

    def __init__(self, config: GPTJConfig):
        super().__init__()
        self.register_buffer(
            "inv_freq", inverse_frequencies(config.rotary_dim or config.head_dim, 10000.0), persistable=False
        )

    @paddle.no_grad()
    def forward(self, x: paddle.Tensor, position_ids: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """cos and sin, each [batch, seq, rotary_dim] with every frequency twice in a row (``rotate_every_two``)."""
        freqs = position_ids.astype("float32").unsqueeze(-1) * self.inv_freq
        cos = freqs.cos().repeat_interleave(2, axis=-1)
        sin = freqs.sin().repeat_interleave(2, axis=-1)
        return cos.astype(x.dtype), sin.astype(x.dtype)


def apply_rotary_pos_emb(
    q: paddle.Tensor, k: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor, unsqueeze_dim: int = 2
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Rotate the first rotary_dim features of q/k [batch, seq, heads, head_dim]; cos/sin broadcast over heads."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    return apply_interleaved_rotary(q, cos, sin), apply_interleaved_rotary(k, cos, sin)


class GPTJLayerNorm(LlamaRMSNorm):
    """LayerNorm with bias; it replaces Llama's RMSNorm everywhere (Llama's code passes ``rms_norm_eps``)."""

    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__(hidden_size, eps)
        self.bias = self.create_parameter([hidden_size], is_bias=True)

    def forward(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        return F.layer_norm(
            hidden_states, hidden_states.shape[-1:], self.weight, self.bias, epsilon=self.variance_epsilon
        )


class GPTJMLP(nn.Layer):
    def __init__(self, config: GPTJConfig):
        super().__init__()
        plan, inner = config.base_model_tp_plan, config.n_inner or 4 * config.n_embd
        self.fc_in = build_linear(config.n_embd, inner, config, plan.get("layers.*.mlp.fc_in"), bias=True)
        self.fc_out = build_linear(inner, config.n_embd, config, plan.get("layers.*.mlp.fc_out"), bias=True)
        self.act = get_activation(config.activation_function)
        self.dropout = config.resid_pdrop

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return F.dropout(self.fc_out(self.act(self.fc_in(x))), self.dropout, training=self.training)


class GPTJDecoderLayer(nn.Layer):
    """HF's ``GPTJBlock``: ``x + attn(ln_1(x)) + mlp(ln_1(x))``."""

    def __init__(self, config: GPTJConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.input_layernorm = GPTJLayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.self_attn = LlamaAttention(config=config, layer_idx=layer_idx)
        self.mlp = GPTJMLP(config)
        mark_sequence_parallel(self.input_layernorm, config)

    def forward(
        self,
        hidden_states: paddle.Tensor,
        position_embeddings: tuple[paddle.Tensor, paddle.Tensor],
        attention_mask: paddle.Tensor,
        past_key_value: tuple[paddle.Tensor, paddle.Tensor] | None = None,
        use_cache: bool = False,
    ) -> tuple[paddle.Tensor, tuple[paddle.Tensor, paddle.Tensor] | None]:
        normed = self.input_layernorm(hidden_states)
        attn_output, present = maybe_recompute(
            self, "full_attn", self.self_attn, normed, position_embeddings, attention_mask, past_key_value, use_cache
        )
        attn_output = F.dropout(attn_output, self.config.resid_pdrop, training=self.training)
        # HF's order of the sum.
        return attn_output + self.mlp(normed) + hidden_states, present


class GPTJPretrainedModel(LlamaPretrainedModel):
    _lm_head_bias = True
    _hf_base_prefix = "transformer"
    _hf_renames: ClassVar[dict[str, str]] = {
        "embed_tokens": "wte",
        "layers": "h",
        "input_layernorm": "ln_1",
        "self_attn": "attn",
        "o_proj": "out_proj",
        "norm": "ln_f",
    }
    _checkpoint_skips: ClassVar[dict[str, str]] = {
        r"(^|\.)attn\.(bias|masked_bias)$": "GPT-J's causal-mask buffers (older checkpoints): rebuilt from the inputs",
    }

    @classmethod
    def _layer_param_actions(cls, config: GPTJConfig, layer_idx: int) -> dict[str, str | None]:
        actions = {f"self_attn.{p}_proj.weight": "transpose" for p in "qkvo"}
        actions |= {"mlp.fc_in.weight": "transpose", "mlp.fc_out.weight": "transpose"}
        actions |= {"mlp.fc_in.bias": None, "mlp.fc_out.bias": None}
        return actions | {"input_layernorm.weight": None, "input_layernorm.bias": None}

    @classmethod
    def _base_param_actions(cls, config: GPTJConfig) -> dict[str, str | None]:
        return super()._base_param_actions(config) | {"norm.bias": None}


class GPTJModel(LlamaModel):
    def input_embeddings(self, input_ids: paddle.Tensor | None, inputs_embeds: paddle.Tensor | None) -> paddle.Tensor:
        hidden_states = super().input_embeddings(input_ids, inputs_embeds)
        return F.dropout(hidden_states, self.config.embd_pdrop, training=self.training)


class GPTJForCausalLM(LlamaForCausalLM):
    pass
