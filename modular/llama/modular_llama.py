"""Llama in PaddlePaddle, written HF-style: the root modular file that the other models inherit from.

Layouts: hidden states [batch, seq, hidden]; attention q/k/v [batch, seq, heads, head_dim]; the KV cache is a tuple
with one ``(key, value)`` pair per layer, each [batch, cached_seq, kv_heads, head_dim] after RoPE.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import paddle
import paddle.nn.functional as F
from paddle import nn
from paddle.distributed.fleet.utils import recompute
from paddlenlp.transformers.activations import ACT2FN
from paddlenlp.transformers.configuration_utils import PretrainedConfig
from paddlenlp.transformers.conversion_utils import StateDictNameMapping
from paddlenlp.transformers.model_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from paddlenlp.transformers.model_utils import PretrainedModel, register_base_model

from modbuild.nn.parallel import (
    DENSE_LAYER_TYPES,
    build_embedding,
    build_linear,
    gather_sequence,
    mark_sequence_parallel,
    scatter_sequence,
    tensor_parallel_actions,
    tied_logits,
)

RECOMPUTE_GRANULARITIES = ("full", "full_attn", "core_attn")


class LlamaConfig(PretrainedConfig):
    """HF ``LlamaConfig`` fields and defaults, plus PaddleNLP switches.

    ``use_flash_attention`` selects the SDPA attention kernel. ``recompute`` with ``recompute_granularity`` in
    ``full`` (decoder layer) / ``full_attn`` (attention block) / ``core_attn`` (attention function) trades compute
    for memory in training. ``use_fused_rms_norm`` must stay False: this model has no fused path, because the
    fused kernels kill AVX2-only CPUs with SIGILL.
    """

    model_type = "llama"
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["past_key_values"]
    base_model_tp_plan: ClassVar[dict[str, str]] = {
        "embed_tokens": "vocab",
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 4096,
        intermediate_size: int = 11008,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        hidden_act: str = "silu",
        max_position_embeddings: int = 2048,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        tie_word_embeddings: bool = False,
        rope_theta: float = 10000.0,
        rope_scaling: dict | None = None,
        attention_bias: bool = False,
        attention_dropout: float = 0.0,
        mlp_bias: bool = False,
        use_flash_attention: bool = False,
        recompute: bool = False,
        recompute_granularity: str = "full",
        sequence_parallel: bool = False,
        use_fused_rms_norm: bool = False,
        **kwargs,
    ):
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            use_cache=use_cache,
            use_flash_attention=use_flash_attention,
            recompute=recompute,
            recompute_granularity=recompute_granularity,
            sequence_parallel=sequence_parallel,
            use_fused_rms_norm=use_fused_rms_norm,
            **kwargs,
        )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.head_dim = head_dim or hidden_size // num_attention_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.attention_bias = attention_bias
        self.attention_dropout = attention_dropout
        self.mlp_bias = mlp_bias
        self._standardize_and_validate()

    def _standardize_and_validate(self) -> None:
        # Older HF configs spell the rope type as "type".
        if self.rope_scaling is not None and "type" in self.rope_scaling:
            self.rope_scaling = {"rope_type": self.rope_scaling["type"], **self.rope_scaling}
        if self.use_fused_rms_norm:
            raise ValueError("use_fused_rms_norm is unsupported: the fused kernels SIGILL on CPUs without AVX-512")
        if self.recompute_granularity not in RECOMPUTE_GRANULARITIES:
            raise ValueError(f"recompute_granularity must be one of {RECOMPUTE_GRANULARITIES}")


class LlamaRMSNorm(nn.Layer):
    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = self.create_parameter([hidden_size], default_initializer=nn.initializer.Constant(1.0))
        self.variance_epsilon = eps

    def forward(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.astype("float32")
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * paddle.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.astype(input_dtype)


def _compute_default_rope_parameters(config: LlamaConfig) -> tuple[paddle.Tensor, float]:
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (paddle.arange(0, dim, 2, dtype="int64").astype("float32") / dim))
    return inv_freq, 1.0


def _compute_linear_scaling_rope_parameters(config: LlamaConfig) -> tuple[paddle.Tensor, float]:
    inv_freq, attention_factor = _compute_default_rope_parameters(config)
    return inv_freq / config.rope_scaling["factor"], attention_factor


def _compute_llama3_parameters(config: LlamaConfig) -> tuple[paddle.Tensor, float]:
    inv_freq, attention_factor = _compute_default_rope_parameters(config)
    scaling = config.rope_scaling
    factor, low_freq_factor, high_freq_factor = (
        scaling["factor"],
        scaling["low_freq_factor"],
        scaling["high_freq_factor"],
    )
    old_context_len = scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor

    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths are slowed by `factor`, short ones kept, and the band between is interpolated.
    inv_freq_long = paddle.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_long / factor + smooth_factor * inv_freq_long
    is_medium_freq = paddle.logical_and(wavelen >= high_freq_wavelen, wavelen <= low_freq_wavelen)
    return paddle.where(is_medium_freq, smoothed_inv_freq, inv_freq_long), attention_factor


def compute_rope_parameters(config: LlamaConfig) -> tuple[paddle.Tensor, float]:
    """``(inv_freq, attention_scaling)`` for ``config.rope_scaling["rope_type"]``."""
    # Built per call, not at import, so that a child's redefinition of an entry is the one used.
    rope_init_functions = {
        "default": _compute_default_rope_parameters,
        "linear": _compute_linear_scaling_rope_parameters,
        "llama3": _compute_llama3_parameters,
    }
    rope_type = (config.rope_scaling or {}).get("rope_type", "default")
    return rope_init_functions[rope_type](config)


class LlamaRotaryEmbedding(nn.Layer):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        inv_freq, self.attention_scaling = compute_rope_parameters(config)
        self.register_buffer("inv_freq", inv_freq, persistable=False)

    @paddle.no_grad()
    def forward(self, x: paddle.Tensor, position_ids: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """cos and sin, each [batch, seq, head_dim], for ``position_ids`` [batch, seq]."""
        freqs = position_ids.astype("float32").unsqueeze(-1) * self.inv_freq
        emb = paddle.concat([freqs, freqs], axis=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.astype(x.dtype), sin.astype(x.dtype)


def rotate_half(x: paddle.Tensor) -> paddle.Tensor:
    x1, x2 = x.chunk(2, axis=-1)
    return paddle.concat([-x2, x1], axis=-1)


def apply_rotary_pos_emb(
    q: paddle.Tensor, k: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor, unsqueeze_dim: int = 2
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Rotate q/k [batch, seq, heads, head_dim]; cos/sin [batch, seq, head_dim] broadcast over heads."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def get_activation(name: str) -> Callable[[paddle.Tensor], paddle.Tensor]:
    """An HF activation by name: paddlenlp's ``ACT2FN`` lacks "gelu_pytorch_tanh" (GeLU, tanh approximation)."""
    return nn.GELU(approximate=True) if name == "gelu_pytorch_tanh" else ACT2FN[name]


class LlamaMLP(nn.Layer):
    def __init__(self, config: LlamaConfig, intermediate_size: int | None = None, plan_prefix: str = "layers.*.mlp"):
        """``intermediate_size`` and the TP plan entries under ``plan_prefix`` default to the dense MLP's; MoE
        children build their experts with their own (``"layers.*.mlp.experts.*"``)."""
        super().__init__()
        plan = config.base_model_tp_plan
        hidden, inter, bias = config.hidden_size, intermediate_size or config.intermediate_size, config.mlp_bias
        self.gate_proj = build_linear(hidden, inter, config, plan.get(f"{plan_prefix}.gate_proj"), bias=bias)
        self.up_proj = build_linear(hidden, inter, config, plan.get(f"{plan_prefix}.up_proj"), bias=bias)
        self.down_proj = build_linear(inter, hidden, config, plan.get(f"{plan_prefix}.down_proj"), bias=bias)
        self.act_fn = get_activation(config.hidden_act)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def repeat_kv(hidden_states: paddle.Tensor, n_rep: int) -> paddle.Tensor:
    """[batch, seq, kv_heads, head_dim] -> [batch, seq, kv_heads * n_rep, head_dim]; head i reads kv head i // n_rep."""
    if n_rep == 1:
        return hidden_states
    batch, seq, kv_heads, head_dim = hidden_states.shape
    hidden_states = hidden_states.unsqueeze(3).expand([batch, seq, kv_heads, n_rep, head_dim])
    return hidden_states.reshape([batch, seq, kv_heads * n_rep, head_dim])


def apply_sliding_window(attention_mask: paddle.Tensor, sliding_window: int) -> paddle.Tensor:
    """Also mask keys ``sliding_window`` or more positions behind their query (HF: q - k < window)."""
    q_len, kv_len = attention_mask.shape[-2:]
    distance = paddle.arange(kv_len - q_len, kv_len).unsqueeze(-1) - paddle.arange(kv_len)
    return paddle.where(distance < sliding_window, attention_mask, paddle.finfo(attention_mask.dtype).min)


def eager_attention_forward(
    module: nn.Layer,
    query: paddle.Tensor,
    key: paddle.Tensor,
    value: paddle.Tensor,
    attention_mask: paddle.Tensor,
    scaling: float,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    **kwargs,
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """q [b, q_len, heads, d], k/v [b, kv_len, kv_heads, d], additive fp32 mask [b, 1, q_len, kv_len].

    Returns the output [b, q_len, heads, d] and the attention weights [b, heads, q_len, kv_len].
    """
    if sliding_window is not None:
        attention_mask = apply_sliding_window(attention_mask, sliding_window)
    key = repeat_kv(key, module.num_key_value_groups).transpose([0, 2, 1, 3])
    value = repeat_kv(value, module.num_key_value_groups).transpose([0, 2, 1, 3])
    query = query.transpose([0, 2, 1, 3])
    attn_weights = paddle.matmul(query, key, transpose_y=True) * scaling
    attn_weights = F.softmax(attn_weights.astype("float32") + attention_mask, axis=-1).astype(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = paddle.matmul(attn_weights, value).transpose([0, 2, 1, 3])
    return attn_output, attn_weights


def sdpa_attention_forward(
    module: nn.Layer,
    query: paddle.Tensor,
    key: paddle.Tensor,
    value: paddle.Tensor,
    attention_mask: paddle.Tensor,
    scaling: float,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    **kwargs,
) -> tuple[paddle.Tensor, None]:
    """Same contract as ``eager_attention_forward`` through paddle's fused SDPA; no weights are returned."""
    if sliding_window is not None:
        attention_mask = apply_sliding_window(attention_mask, sliding_window)
    attn_output = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask.astype(query.dtype),
        dropout_p=dropout,
        training=module.training,
        scale=scaling,
        enable_gqa=True,
    )
    return attn_output, None


def attention_function(config: LlamaConfig) -> Callable[..., tuple[paddle.Tensor, paddle.Tensor | None]]:
    """The attention implementation selected by the config."""
    # Built per call, not at import, so that a child's redefinition of an entry is the one used.
    attention_functions = {"eager": eager_attention_forward, "sdpa": sdpa_attention_forward}
    return attention_functions["sdpa" if config.use_flash_attention else "eager"]


def maybe_recompute(module: nn.Layer, granularity: str, function: Callable, *args, **kwargs):
    """Call ``function``; under ``config.recompute`` at this granularity, recompute it in backward instead."""
    config = module.config
    if not (config.recompute and module.training and config.recompute_granularity == granularity):
        return function(*args, **kwargs)
    # Always non-reentrant: paddle 3.3's reentrant recompute rejects keyword arguments and fails in backward on
    # the tuple/None arguments and outputs these layers use.
    return recompute(function, *args, use_reentrant=False, **kwargs)


class LlamaAttention(nn.Layer):
    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        tp_degree = config.tensor_parallel_degree
        if config.num_attention_heads % tp_degree or config.num_key_value_heads % tp_degree:
            raise ValueError("attention and key/value head counts must be divisible by tensor_parallel_degree")
        # Heads held by this rank.
        self.num_heads = config.num_attention_heads // tp_degree
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        # Children with local attention (Mistral, Qwen2) set a window per layer_idx.
        self.sliding_window = None

        plan, bias = config.base_model_tp_plan, config.attention_bias
        # Sizes are spelled out per projection (no shared locals), so a child can rebuild any one of them.
        q_dim = config.num_attention_heads * self.head_dim
        self.q_proj = build_linear(config.hidden_size, q_dim, config, plan.get("layers.*.self_attn.q_proj"), bias)
        self.k_proj = build_linear(
            config.hidden_size,
            config.num_key_value_heads * self.head_dim,
            config,
            plan.get("layers.*.self_attn.k_proj"),
            bias,
        )
        self.v_proj = build_linear(
            config.hidden_size,
            config.num_key_value_heads * self.head_dim,
            config,
            plan.get("layers.*.self_attn.v_proj"),
            bias,
        )
        self.o_proj = build_linear(q_dim, config.hidden_size, config, plan.get("layers.*.self_attn.o_proj"), bias)

    def project_qkv(
        self, hidden_states: paddle.Tensor, hidden_shape: list[int]
    ) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        """Per-head q, k, v [batch, seq, heads, head_dim], before RoPE (children normalise q/k heads here)."""
        return (
            self.q_proj(hidden_states).reshape(hidden_shape),
            self.k_proj(hidden_states).reshape(hidden_shape),
            self.v_proj(hidden_states).reshape(hidden_shape),
        )

    def forward(
        self,
        hidden_states: paddle.Tensor,
        position_embeddings: tuple[paddle.Tensor, paddle.Tensor],
        attention_mask: paddle.Tensor,
        past_key_value: tuple[paddle.Tensor, paddle.Tensor] | None = None,
        use_cache: bool = False,
    ) -> tuple[paddle.Tensor, tuple[paddle.Tensor, paddle.Tensor] | None]:
        cos, sin = position_embeddings
        # Batch and sequence come from the positions: under sequence parallelism hidden_states is [b*s/tp, h].
        hidden_shape = [*cos.shape[:2], -1, self.head_dim]
        query_states, key_states, value_states = self.project_qkv(hidden_states, hidden_shape)
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if past_key_value is not None:
            key_states = paddle.concat([past_key_value[0], key_states], axis=1)
            value_states = paddle.concat([past_key_value[1], value_states], axis=1)
        present = (key_states, value_states) if use_cache else None

        attn_output, _ = maybe_recompute(
            self,
            "core_attn",
            attention_function(self.config),
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            scaling=self.scaling,
            dropout=self.attention_dropout if self.training else 0.0,
            sliding_window=self.sliding_window,
        )
        # Tokens are flattened so that the same code serves sequence parallelism.
        attn_output = self.o_proj(attn_output.reshape([-1, self.num_heads * self.head_dim]))
        return attn_output.reshape(hidden_states.shape), present


class LlamaDecoderLayer(nn.Layer):
    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.self_attn = LlamaAttention(config=config, layer_idx=layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        mark_sequence_parallel(self.input_layernorm, config)
        mark_sequence_parallel(self.post_attention_layernorm, config)

    def forward(
        self,
        hidden_states: paddle.Tensor,
        position_embeddings: tuple[paddle.Tensor, paddle.Tensor],
        attention_mask: paddle.Tensor,
        past_key_value: tuple[paddle.Tensor, paddle.Tensor] | None = None,
        use_cache: bool = False,
    ) -> tuple[paddle.Tensor, tuple[paddle.Tensor, paddle.Tensor] | None]:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, present = maybe_recompute(
            self,
            "full_attn",
            self.self_attn,
            hidden_states,
            position_embeddings,
            attention_mask,
            past_key_value,
            use_cache,
        )
        hidden_states = residual + hidden_states

        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + hidden_states, present


class LlamaPretrainedModel(PretrainedModel):
    config_class = LlamaConfig
    base_model_prefix = "llama"
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"rotary_emb\.inv_freq"]
    # Plan for modules outside the base model; LlamaForCausalLM adds its lm_head.
    _tp_plan: ClassVar[dict[str, str]] = {}

    @classmethod
    def _layer_param_actions(cls, config: LlamaConfig, layer_idx: int) -> dict[str, str | None]:
        """Decoder layer ``layer_idx``'s parameters (HF names after ``layers.N.``) -> conversion action from HF."""
        actions = {f"self_attn.{p}_proj.weight": "transpose" for p in "qkvo"}
        actions |= {f"mlp.{p}_proj.weight": "transpose" for p in ("gate", "up", "down")}
        actions |= {"input_layernorm.weight": None, "post_attention_layernorm.weight": None}
        if config.attention_bias:
            actions |= {f"self_attn.{p}_proj.bias": None for p in "qkvo"}
        if config.mlp_bias:
            actions |= {f"mlp.{p}_proj.bias": None for p in ("gate", "up", "down")}
        return actions

    @classmethod
    def _base_param_actions(cls, config: LlamaConfig) -> dict[str, str | None]:
        """Every base-model parameter name (no prefix) -> conversion action from HF."""
        actions = {"embed_tokens.weight": None, "norm.weight": None}
        for i in range(config.num_hidden_layers):
            actions |= {f"layers.{i}.{name}": a for name, a in cls._layer_param_actions(config, i).items()}
        return actions

    @classmethod
    def _has_lm_head(cls, config: LlamaConfig) -> bool:
        return config.architectures is None or cls.base_model_class.__name__ not in config.architectures

    @classmethod
    def _get_name_mappings(cls, config: LlamaConfig) -> list[StateDictNameMapping]:
        """HF parameter names (``model.``) -> ours (``llama.``), transposing Linear weights."""
        mappings = [[name, name, action] for name, action in cls._base_param_actions(config).items()]
        if cls._has_lm_head(config):
            mappings = [[f"model.{src}", f"{cls.base_model_prefix}.{dst}", a] for src, dst, a in mappings]
            if not config.tie_word_embeddings:
                mappings.append(["lm_head.weight", "lm_head.weight", "transpose"])
        return [StateDictNameMapping(*mapping, index=index) for index, mapping in enumerate(mappings)]

    @classmethod
    def _get_tensor_parallel_mappings(cls, config: LlamaConfig, is_split: bool = True) -> dict[str, Callable]:
        names = list(cls._base_param_actions(config))
        if not config.tie_word_embeddings:
            names.append("lm_head.weight")
        plan = {**config.base_model_tp_plan, **cls._tp_plan}
        return tensor_parallel_actions(plan, names, config, is_split=is_split)

    def _init_weights(self, layer: nn.Layer) -> None:
        if isinstance(layer, DENSE_LAYER_TYPES):
            std = self.config.initializer_range
            layer.weight.set_value(paddle.normal(0.0, std, layer.weight.shape).astype(layer.weight.dtype))


@register_base_model
class LlamaModel(LlamaPretrainedModel):
    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.embed_tokens = build_embedding(
            config.vocab_size, config.hidden_size, config, config.base_model_tp_plan.get("embed_tokens")
        )
        self.layers = nn.LayerList([LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        mark_sequence_parallel(self.norm, config)
        self.rotary_emb = LlamaRotaryEmbedding(config)

    def get_input_embeddings(self) -> nn.Layer:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Layer) -> None:
        self.embed_tokens = value

    def input_embeddings(self, input_ids: paddle.Tensor | None, inputs_embeds: paddle.Tensor | None) -> paddle.Tensor:
        """The hidden states entering the first layer (children may scale them, as Gemma does)."""
        return self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds

    @staticmethod
    def _default_position_ids(
        attention_mask: paddle.Tensor | None, batch_size: int, seq_length: int, past_length: int
    ) -> paddle.Tensor:
        """Real tokens count 0, 1, ... from the first unpadded one (left padding as in HF generation)."""
        if attention_mask is None:
            return paddle.arange(past_length, past_length + seq_length).expand([batch_size, seq_length])
        position_ids = (attention_mask.astype("int64").cumsum(-1) - 1).clip(min=0)
        return position_ids[:, -seq_length:]

    @staticmethod
    def _prepare_attention_mask(
        attention_mask: paddle.Tensor | None, batch_size: int, seq_length: int, past_length: int
    ) -> paddle.Tensor:
        """2-D padding mask [b, past+seq] (1 = real) -> additive fp32 causal mask [b, 1, seq, past+seq]."""
        kv_length = past_length + seq_length
        query_pos = paddle.arange(past_length, kv_length).unsqueeze(-1)
        allowed = (paddle.arange(kv_length) <= query_pos).expand([batch_size, 1, seq_length, kv_length])
        if attention_mask is not None:
            allowed = paddle.logical_and(allowed, attention_mask.astype("bool")[:, None, None, :])
        return paddle.where(allowed, 0.0, paddle.finfo(paddle.float32).min).astype("float32")

    def forward(
        self,
        input_ids: paddle.Tensor | None = None,
        attention_mask: paddle.Tensor | None = None,
        position_ids: paddle.Tensor | None = None,
        past_key_values: tuple[tuple[paddle.Tensor, paddle.Tensor], ...] | None = None,
        inputs_embeds: paddle.Tensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPast | tuple:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        return_dict = self.config.return_dict if return_dict is None else return_dict
        inputs_embeds = self.input_embeddings(input_ids, inputs_embeds)

        batch_size, seq_length = inputs_embeds.shape[:2]
        past_length = past_key_values[0][0].shape[1] if past_key_values else 0
        if position_ids is None:
            position_ids = self._default_position_ids(attention_mask, batch_size, seq_length, past_length)
        mask = self._prepare_attention_mask(attention_mask, batch_size, seq_length, past_length)
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids)

        hidden_states = scatter_sequence(inputs_embeds, self.config)
        presents = []
        for layer, past in zip(self.layers, past_key_values or [None] * len(self.layers)):
            hidden_states, present = maybe_recompute(
                self, "full", layer, hidden_states, position_embeddings, mask, past, use_cache
            )
            presents.append(present)
        hidden_states = gather_sequence(self.norm(hidden_states), [batch_size, seq_length], self.config)

        past_key_values = tuple(presents) if use_cache else None
        if not return_dict:
            return tuple(v for v in (hidden_states, past_key_values) if v is not None)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, past_key_values=past_key_values)


class LlamaForCausalLM(LlamaPretrainedModel):
    _tp_plan: ClassVar[dict[str, str]] = {"lm_head": "colwise_rep"}

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.llama = LlamaModel(config)
        # Tied: logits use the embedding table directly, so there is no lm_head parameter at all.
        if not config.tie_word_embeddings:
            self.lm_head = build_linear(config.hidden_size, config.vocab_size, config, self._tp_plan["lm_head"])

    def get_output_embeddings(self) -> nn.Layer | None:
        return None if self.config.tie_word_embeddings else self.lm_head

    def compute_logits(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        if self.config.tie_word_embeddings:
            return tied_logits(hidden_states, self.llama.embed_tokens.weight, self.config)
        return self.lm_head(hidden_states)

    @staticmethod
    def compute_loss(logits: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
        """Mean next-token cross entropy: position t predicts labels[t + 1]; label -100 is ignored."""
        shift_logits = logits[:, :-1].astype("float32").reshape([-1, logits.shape[-1]])
        shift_labels = labels[:, 1:].reshape([-1])
        losses = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="none")
        # Paddle's "mean" divides by all positions; HF averages over the non-ignored ones.
        return losses.sum() / (shift_labels != -100).sum().astype(losses.dtype)

    def forward(
        self,
        input_ids: paddle.Tensor | None = None,
        attention_mask: paddle.Tensor | None = None,
        position_ids: paddle.Tensor | None = None,
        past_key_values: tuple[tuple[paddle.Tensor, paddle.Tensor], ...] | None = None,
        inputs_embeds: paddle.Tensor | None = None,
        labels: paddle.Tensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
    ) -> CausalLMOutputWithPast | tuple:
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.llama(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
        )
        logits = self.compute_logits(outputs.last_hidden_state)
        loss = None if labels is None else self.compute_loss(logits, labels)
        if not return_dict:
            return tuple(v for v in (loss, logits, outputs.past_key_values) if v is not None)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=outputs.past_key_values)


__all__ = [
    "LlamaAttention",
    "LlamaConfig",
    "LlamaDecoderLayer",
    "LlamaForCausalLM",
    "LlamaMLP",
    "LlamaModel",
    "LlamaPretrainedModel",
    "LlamaRMSNorm",
    "LlamaRotaryEmbedding",
]
