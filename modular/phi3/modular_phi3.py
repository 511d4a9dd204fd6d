"""Phi-3: Mistral with one fused ``qkv_proj`` and GLM's fused ``gate_up_proj`` MLP (the fused layout HF's Phi-3
checkpoints hold), RoPE on the first ``partial_rotary_factor`` of each head with Phi-3's longrope (short factors up
to ``original_max_position_embeddings``, long ones past it), and dropout on each residual branch (``resid_pdrop``).

Under TP both fused projections are split part by part (plan styles ``colwise_qkv``: q, k and v by heads, and
``colwise_fused2``: gate and up by halves), so every rank holds whole heads and nothing is replicated.
"""

from typing import ClassVar

import paddle
from paddle import nn

from generated.glm.modeling_glm import GlmMLP
from generated.mistral.configuration_mistral import MistralConfig
from generated.mistral.modeling_mistral import (
    MistralAttention,
    MistralDecoderLayer,
    MistralForCausalLM,
    MistralModel,
    MistralPretrainedModel,
)
from modbuild.nn.parallel import build_linear
from modbuild.nn.recompute import maybe_recompute
from modbuild.nn.rope import RotaryEmbedding, apply_rotary, rope_dim


class Phi3Config(MistralConfig):
    """HF ``Phi3Config``. ``rope_scaling`` is HF's Phi-3 spelling, ``{"type": "longrope", "short_factor": [...],
    "long_factor": [...]}`` (``"su"`` and ``"yarn"`` are older names of longrope), one factor per rotated
    frequency; the long factors apply once a sequence is longer than ``original_max_position_embeddings``."""

    model_type = "phi3"
    base_model_tp_plan: ClassVar[dict[str, str]] = {
        "embed_tokens": "vocab",
        "layers.*.self_attn.qkv_proj": "colwise_qkv",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_up_proj": "colwise_fused2",
        "layers.*.mlp.down_proj": "rowwise",
    }

    def __init__(
        self,
        vocab_size: int = 32064,
        hidden_size: int = 3072,
        intermediate_size: int = 8192,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = None,
        resid_pdrop: float = 0.0,
        embd_pdrop: float = 0.0,
        max_position_embeddings: int = 4096,
        original_max_position_embeddings: int = 4096,
        rms_norm_eps: float = 1e-5,
        partial_rotary_factor: float = 1.0,
        bos_token_id: int = 1,
        eos_token_id: int = 32000,
        pad_token_id: int | None = 32000,
        sliding_window: int | None = None,
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
            rms_norm_eps=rms_norm_eps,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            sliding_window=sliding_window,
            **super_kwargs,
        )
        self.resid_pdrop = resid_pdrop
        self.embd_pdrop = embd_pdrop  # stored, as HF stores it: HF's Phi-3 applies no embedding dropout
        self.original_max_position_embeddings = original_max_position_embeddings
        self.partial_rotary_factor = partial_rotary_factor
        self._check_rope_scaling()

    def _check_rope_scaling(self) -> None:
        """``rope_scaling`` checked as HF checks it, and kept in HF's spelling (LlamaConfig adds a ``rope_type`` key;
        HF's Phi3Config refuses a fourth key when it reads the config back)."""
        if self.rope_scaling is None:
            return
        scaling = {k: v for k, v in self.rope_scaling.items() if k not in ("type", "rope_type")}
        kind = self.rope_scaling.get("type", self.rope_scaling.get("rope_type"))
        if kind not in ("longrope", "su", "yarn") or set(scaling) != {"short_factor", "long_factor"}:
            raise ValueError(
                "rope_scaling must be {'type': 'longrope', 'short_factor': [...], 'long_factor': [...]}, "
                f"not {self.rope_scaling}"
            )
        for key in ("short_factor", "long_factor"):
            if not isinstance(scaling[key], list) or len(scaling[key]) != rope_dim(self) // 2:
                raise ValueError(
                    f"rope_scaling {key} must list {rope_dim(self) // 2} numbers (one per rotated frequency), "
                    f"not {scaling[key]!r}"
                )
        self.rope_scaling = {"type": "longrope", **scaling}


class Phi3RotaryEmbedding(RotaryEmbedding):
    """HF's, with longrope's switch to the long factors (``modbuild.nn.rope``)."""


def apply_rotary_pos_emb(
    q: paddle.Tensor, k: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor, unsqueeze_dim: int = 2
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Rotate the first rotary features of q/k [batch, seq, heads, head_dim] in halves; the rest pass through."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)


class Phi3MLP(GlmMLP):
    pass


class Phi3Attention(MistralAttention):
    def __init__(self, config: Phi3Config, layer_idx: int):
        super().__init__(config, layer_idx)
        del self.q_proj
        del self.k_proj
        del self.v_proj
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.qkv_proj = build_linear(
            config.hidden_size,
            (heads + 2 * kv_heads) * self.head_dim,
            config,
            config.base_model_tp_plan.get("layers.*.self_attn.qkv_proj"),
        )
        # This rank's q and k widths in its [q, k, v] share.
        self.q_width = self.num_heads * self.head_dim
        self.kv_width = kv_heads // config.tensor_parallel_degree * self.head_dim

    def project_qkv(
        self, hidden_states: paddle.Tensor, hidden_shape: list[int]
    ) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        qkv = self.qkv_proj(hidden_states)
        query, key, value = qkv.split([self.q_width, self.kv_width, self.kv_width], axis=-1)
        return query.reshape(hidden_shape), key.reshape(hidden_shape), value.reshape(hidden_shape)


class Phi3DecoderLayer(MistralDecoderLayer):
    def __init__(self, config: Phi3Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.resid_attn_dropout = nn.Dropout(config.resid_pdrop)
        self.resid_mlp_dropout = nn.Dropout(config.resid_pdrop)

    def forward(
        self,
        hidden_states: paddle.Tensor,
        position_embeddings: tuple[paddle.Tensor, paddle.Tensor],
        attention_mask: paddle.Tensor,
        past_key_value: tuple[paddle.Tensor, paddle.Tensor] | None = None,
        use_cache: bool = False,
    ) -> tuple[paddle.Tensor, tuple[paddle.Tensor, paddle.Tensor] | None]:
        attn_output, present = maybe_recompute(
            self,
            "full_attn",
            self.self_attn,
            self.input_layernorm(hidden_states),
            position_embeddings,
            attention_mask,
            past_key_value,
            use_cache,
        )
        hidden_states = hidden_states + self.resid_attn_dropout(attn_output)
        mlp_output = self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states + self.resid_mlp_dropout(mlp_output), present


class Phi3PretrainedModel(MistralPretrainedModel):
    @classmethod
    def _layer_param_actions(cls, config: Phi3Config, layer_idx: int) -> dict[str, str | None]:
        """HF's fused tensors as they are, transposed: the parts lie along the output axis either way."""
        actions = {f"self_attn.{p}.weight": "transpose" for p in ("qkv_proj", "o_proj")}
        actions |= {f"mlp.{p}.weight": "transpose" for p in ("gate_up_proj", "down_proj")}
        return actions | {"input_layernorm.weight": None, "post_attention_layernorm.weight": None}


class Phi3Model(MistralModel):
    pass


class Phi3ForCausalLM(MistralForCausalLM):
    def cache_outdated(self, past_length: int, length: int) -> bool:
        """Whether greedy decoding must drop the KV cache and run the whole sequence again before this step, as
        HF's Phi-3 ``prepare_inputs_for_generation`` does: the first time the sequence grows past
        ``original_max_position_embeddings``, the cached keys were rotated with the short factors."""
        original = self.config.original_max_position_embeddings
        return bool(self.config.rope_scaling) and length >= original + 1 and past_length <= original
