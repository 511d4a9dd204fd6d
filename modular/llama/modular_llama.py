"""Llama in PaddlePaddle, written HF-style.

Layouts: hidden states [batch, seq, hidden]; attention q/k/v [batch, seq, heads, head_dim]; the KV cache is a tuple
with one ``(key, value)`` pair per layer, each [batch, cached_seq, kv_heads, head_dim] after RoPE.
"""

from __future__ import annotations

from typing import ClassVar

import paddle
from paddle import nn
from paddlenlp.transformers.configuration_utils import PretrainedConfig
from paddlenlp.transformers.model_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from paddlenlp.transformers.model_utils import register_base_model

from modbuild.nn.activations import get_activation
from modbuild.nn.attention import attention_function
from modbuild.nn.masks import causal_mask, default_position_ids
from modbuild.nn.parallel import (
    build_embedding,
    build_linear,
    gather_sequence,
    mark_sequence_parallel,
    scatter_sequence,
    tied_logits,
)
from modbuild.nn.pretrained import DecoderPretrainedModel
from modbuild.nn.recompute import RECOMPUTE_GRANULARITIES, maybe_recompute
from modbuild.nn.rope import compute_rope_parameters


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


class LlamaMLP(nn.Layer):
    def __init__(self, config: LlamaConfig, intermediate_size: int | None = None, plan_prefix: str = "layers.*.mlp"):
        """``intermediate_size`` and the TP plan entries under ``plan_prefix`` default to the dense MLP's; an MoE
        expert passes its own (``"layers.*.mlp.experts.*"``)."""
        super().__init__()
        plan = config.base_model_tp_plan
        hidden, inter, bias = config.hidden_size, intermediate_size or config.intermediate_size, config.mlp_bias
        self.gate_proj = build_linear(hidden, inter, config, plan.get(f"{plan_prefix}.gate_proj"), bias=bias)
        self.up_proj = build_linear(hidden, inter, config, plan.get(f"{plan_prefix}.up_proj"), bias=bias)
        self.down_proj = build_linear(inter, hidden, config, plan.get(f"{plan_prefix}.down_proj"), bias=bias)
        self.act_fn = get_activation(config.hidden_act)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


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
        # Keys this many or more positions behind their query are masked; None: full attention.
        self.sliding_window = None

        plan, bias = config.base_model_tp_plan, config.attention_bias
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
        """Per-head q, k, v [batch, seq, heads, head_dim], before RoPE."""
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


class LlamaPretrainedModel(DecoderPretrainedModel):
    config_class = LlamaConfig
    base_model_prefix = "llama"
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"rotary_emb\.inv_freq"]

    @classmethod
    def _layer_param_actions(cls, config: LlamaConfig, layer_idx: int) -> dict[str, str | None]:
        """Decoder layer ``layer_idx``'s parameters (names after ``layers.N.``) -> conversion action from HF."""
        actions = {f"self_attn.{p}_proj.weight": "transpose" for p in "qkvo"}
        actions |= {f"mlp.{p}_proj.weight": "transpose" for p in ("gate", "up", "down")}
        actions |= {"input_layernorm.weight": None, "post_attention_layernorm.weight": None}
        if config.attention_bias:
            actions |= {f"self_attn.{p}_proj.bias": None for p in "qkvo"}
        if config.mlp_bias:
            actions |= {f"mlp.{p}_proj.bias": None for p in ("gate", "up", "down")}
        return actions


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
        """The hidden states entering the first layer."""
        return self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds

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
            position_ids = default_position_ids(attention_mask, batch_size, seq_length, past_length)
        mask = causal_mask(attention_mask, batch_size, seq_length, past_length)
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
            self.lm_head = build_linear(
                config.hidden_size, config.vocab_size, config, self._tp_plan["lm_head"], bias=self._lm_head_bias
            )

    def get_output_embeddings(self) -> nn.Layer | None:
        return None if self.config.tie_word_embeddings else self.lm_head

    def compute_logits(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        if self.config.tie_word_embeddings:
            return tied_logits(hidden_states, self.llama.embed_tokens.weight, self.config)
        return self.lm_head(hidden_states)

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
