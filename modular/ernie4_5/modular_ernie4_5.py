"""ERNIE 4.5 (dense, HF 4.55.4's ``Ernie4_5ForCausalLM``): Llama with GLM's pairwise (interleaved) RoPE over the
whole head, and one ``use_bias`` switch for every projection's bias (q/k/v/o and the MLP's; the lm_head never has
one). Tied embeddings, ``head_dim`` 128 and ``rope_theta`` 5e5 by default.

RoPE: HF computes cos/sin in halves layout, then keeps the first half of each and repeats every frequency twice
(f0 f0 f1 f1 ...), and rotates pairs (GLM's ``rotate_half``, i.e. ``rotate_every_two``): GLM's rotary embedding
with ``partial_rotary_factor`` 1.
"""

from typing import ClassVar

from generated.glm.modeling_glm import GlmRotaryEmbedding, apply_rotary_pos_emb  # noqa: F401 - HF's RoPE rule
from generated.llama.configuration_llama import LlamaConfig
from generated.llama.modeling_llama import LlamaForCausalLM, LlamaModel


class Ernie4_5Config(LlamaConfig):
    """HF ``Ernie4_5Config``. ``use_bias`` stands for Llama's ``attention_bias`` and ``mlp_bias`` together."""

    model_type = "ernie4_5"
    attribute_map: ClassVar[dict[str, str]] = {"attention_bias": "use_bias", "mlp_bias": "use_bias"}

    def __init__(
        self,
        vocab_size: int = 103424,
        hidden_size: int = 1024,
        intermediate_size: int = 3072,
        num_hidden_layers: int = 18,
        num_attention_heads: int = 16,
        num_key_value_heads: int | None = 2,
        head_dim: int | None = 128,
        max_position_embeddings: int = 131072,
        rms_norm_eps: float = 1e-5,
        pad_token_id: int | None = 0,
        tie_word_embeddings: bool = True,
        rope_theta: float = 500000.0,
        use_bias: bool = False,
        **super_kwargs,
    ):
        super().__init__(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            head_dim=head_dim,
            max_position_embeddings=max_position_embeddings,
            rms_norm_eps=rms_norm_eps,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            rope_theta=rope_theta,
            attention_bias=use_bias,
            mlp_bias=use_bias,
            **super_kwargs,
        )


class Ernie4_5RotaryEmbedding(GlmRotaryEmbedding):
    """cos/sin over the whole head (no ``partial_rotary_factor``), each frequency twice in a row."""


class Ernie4_5Model(LlamaModel):
    pass


class Ernie4_5ForCausalLM(LlamaForCausalLM):
    pass
