"""DeepSeek-V3: Llama with multi-head latent attention (MLA) and, after ``first_k_dense_replace`` dense layers,
fine-grained MoE layers: routed experts chosen by bias-corrected sigmoid scores inside the best expert groups, plus
always-on shared experts (HF 4.55.4's ``DeepseekV3ForCausalLM``).

MLA: q from a low-rank ``q_a_proj`` -> ``q_a_layernorm`` -> ``q_b_proj`` (or one ``q_proj`` when ``q_lora_rank`` is
None); ``kv_a_proj_with_mqa`` gives a ``kv_lora_rank`` latent (normed, then ``kv_b_proj`` to per-head nope keys and
values) and one rope key shared by all heads. RoPE turns only the last ``qk_rope_head_dim`` features of q and k;
``rope_interleave`` first de-interleaves them (x0 x2 ... x1 x3 ...), as HF does. Yarn's ``mscale_all_dim`` also
scales the softmax.

KV cache: what HF's ``DynamicCache`` holds, per layer the full keys after RoPE [batch, seq, heads, qk_head_dim] (the
shared rope key copied into every head, de-interleaved) and the values [batch, seq, heads, v_head_dim]. A cache of
the compressed latent and the rope key (kv_lora_rank + qk_rope_head_dim per token, absorbing kv_b_proj into the query
and output) would be far smaller; it is a later option, and its contents would no longer be HF's.

Tensor parallelism: q_proj / q_b_proj / kv_b_proj split by heads (column-wise), o_proj row-wise; the low-rank
a-projections and their norms are replicated, their gradients summed over the ranks (by the column-parallel b
projections' input, and by ``replicated_input`` for the shared rope key). The router and its correction bias are
replicated; each routed and shared expert is split like a dense MLP. No sequence parallelism: under it each rank
would route its own tokens, and an expert's column-parallel input would gather unequal token sets.
"""

import math
from typing import ClassVar

import paddle
from paddle import nn

from generated.llama.configuration_llama import LlamaConfig
from generated.llama.modeling_llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaMLP,
    LlamaModel,
    LlamaPretrainedModel,
    LlamaRMSNorm,
    rotate_half,
)
from modbuild.nn.moe_routing import combine_experts, sigmoid_topk_routing
from modbuild.nn.parallel import build_linear, replicated_input


class DeepseekV3Config(LlamaConfig):
    """HF ``DeepseekV3Config``. ``head_dim`` is ``qk_rope_head_dim`` (the features RoPE turns), as HF saves it."""

    model_type = "deepseek_v3"
    # Why `train-tp2` runs no sequence-parallel case (read by modbuild/tp/worker.py).
    sequence_parallel_unsupported = "MoE: under SP each rank routes its own tokens, so experts see unequal token sets"
    base_model_tp_plan: ClassVar[dict[str, str]] = {
        "embed_tokens": "vocab",
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.q_b_proj": "colwise",
        "layers.*.self_attn.kv_b_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
        "layers.*.mlp.experts.*.gate_proj": "colwise",
        "layers.*.mlp.experts.*.up_proj": "colwise",
        "layers.*.mlp.experts.*.down_proj": "rowwise",
        "layers.*.mlp.shared_experts.gate_proj": "colwise",
        "layers.*.mlp.shared_experts.up_proj": "colwise",
        "layers.*.mlp.shared_experts.down_proj": "rowwise",
    }

    def __init__(
        self,
        vocab_size: int = 129280,
        hidden_size: int = 7168,
        intermediate_size: int = 18432,
        moe_intermediate_size: int = 2048,
        num_hidden_layers: int = 61,
        num_attention_heads: int = 128,
        num_key_value_heads: int | None = 128,
        n_shared_experts: int = 1,
        n_routed_experts: int = 256,
        routed_scaling_factor: float = 2.5,
        kv_lora_rank: int = 512,
        q_lora_rank: int | None = 1536,
        qk_rope_head_dim: int = 64,
        v_head_dim: int = 128,
        qk_nope_head_dim: int = 128,
        n_group: int = 8,
        topk_group: int = 4,
        num_experts_per_tok: int = 8,
        first_k_dense_replace: int = 3,
        norm_topk_prob: bool = True,
        max_position_embeddings: int = 4096,
        bos_token_id: int = 0,
        eos_token_id: int = 1,
        rope_interleave: bool = True,
        head_dim: int | None = None,
        topk_method: str = "noaux_tc",
        scoring_func: str = "sigmoid",
        **super_kwargs,
    ):
        if head_dim is not None and head_dim != qk_rope_head_dim:
            raise ValueError(f"head_dim ({head_dim}) must equal qk_rope_head_dim ({qk_rope_head_dim}): RoPE's size")
        super().__init__(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            head_dim=qk_rope_head_dim,
            max_position_embeddings=max_position_embeddings,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            **super_kwargs,
        )
        self.moe_intermediate_size = moe_intermediate_size
        self.n_shared_experts = n_shared_experts
        self.n_routed_experts = n_routed_experts
        self.routed_scaling_factor = routed_scaling_factor
        self.kv_lora_rank = kv_lora_rank
        self.q_lora_rank = q_lora_rank
        self.qk_rope_head_dim = qk_rope_head_dim
        self.v_head_dim = v_head_dim
        self.qk_nope_head_dim = qk_nope_head_dim
        self.qk_head_dim = qk_nope_head_dim + qk_rope_head_dim
        self.n_group = n_group
        self.topk_group = topk_group
        self.num_experts_per_tok = num_experts_per_tok
        self.first_k_dense_replace = first_k_dense_replace
        self.norm_topk_prob = norm_topk_prob
        self.rope_interleave = rope_interleave
        # Not HF's fields but DeepSeek's own config.json's (and PaddleNLP's): the one routing implemented here.
        self.topk_method, self.scoring_func = topk_method, scoring_func
        self._check_mla_and_routing()

    def _check_mla_and_routing(self) -> None:
        if (self.topk_method, self.scoring_func) != ("noaux_tc", "sigmoid"):
            raise ValueError(
                f"topk_method {self.topk_method!r} with scoring_func {self.scoring_func!r} is unsupported: only"
                " DeepSeek-V3's 'noaux_tc' with 'sigmoid' (HF's DeepseekV3 routes so whatever these say)"
            )
        if self.num_key_value_heads != self.num_attention_heads:
            raise ValueError(
                f"num_key_value_heads ({self.num_key_value_heads}) must equal num_attention_heads"
                f" ({self.num_attention_heads}): MLA projects keys and values for every head"
            )
        if self.n_routed_experts % self.n_group or self.n_routed_experts // self.n_group < 2:
            raise ValueError(
                f"n_group ({self.n_group}) must split n_routed_experts ({self.n_routed_experts}) into equal groups"
                " of 2 or more experts (a group scores the sum of its two best)"
            )
        if not self.num_experts_per_tok <= self.topk_group * (self.n_routed_experts // self.n_group):
            raise ValueError(
                f"num_experts_per_tok ({self.num_experts_per_tok}) exceeds the experts of topk_group"
                f" ({self.topk_group}) groups"
            )
        if not 0 < self.topk_group <= self.n_group:
            raise ValueError(f"topk_group ({self.topk_group}) must be in 1..n_group ({self.n_group})")
        if self.sequence_parallel:
            raise ValueError(f"sequence_parallel is unsupported: {self.sequence_parallel_unsupported}")


def apply_rotary_pos_emb(
    q: paddle.Tensor, k: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor, unsqueeze_dim: int = 2
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Rotate the last ``cos.shape[-1]`` features (the rope part) of q/k [batch, seq, heads, qk_head_dim] in
    halves; the first (nope) features pass through."""
    cos, sin, rope = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim), cos.shape[-1]

    def rotate(x: paddle.Tensor) -> paddle.Tensor:
        x_rot = x[..., -rope:]
        return paddle.concat([x[..., :-rope], x_rot * cos + rotate_half(x_rot) * sin], axis=-1)

    return rotate(q), rotate(k)


def deinterleave_rope(x: paddle.Tensor, rope: int) -> paddle.Tensor:
    """The last ``rope`` features (x0 x1 x2 x3 ...) -> (x0 x2 ... x1 x3 ...): HF's ``rope_interleave``, after
    which rotating halves turns the original pairs."""
    x_rot = x[..., -rope:]
    return paddle.concat([x[..., :-rope], x_rot[..., 0::2], x_rot[..., 1::2]], axis=-1)


def yarn_get_mscale(scale: float = 1, mscale: float = 1) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


class DeepseekV3MLP(LlamaMLP):
    pass


class DeepseekV3Attention(LlamaAttention):
    def __init__(self, config: DeepseekV3Config, layer_idx: int):
        nn.Layer.__init__(self)  # none of Llama's projections
        self.config, self.layer_idx = config, layer_idx
        if config.num_attention_heads % config.tensor_parallel_degree:
            raise ValueError("num_attention_heads must be divisible by tensor_parallel_degree")
        self.num_heads = config.num_attention_heads // config.tensor_parallel_degree  # on this rank
        self.num_key_value_groups, self.attention_dropout, self.sliding_window = 1, config.attention_dropout, None
        # Llama's forward reads head_dim as the size of each head's output, which o_proj takes.
        self.head_dim = config.v_head_dim
        self.q_lora_rank, self.kv_lora_rank = config.q_lora_rank, config.kv_lora_rank
        self.qk_nope_head_dim, self.qk_rope_head_dim = config.qk_nope_head_dim, config.qk_rope_head_dim
        self.qk_head_dim, self.v_head_dim = config.qk_head_dim, config.v_head_dim
        plan, bias, heads = config.base_model_tp_plan, config.attention_bias, config.num_attention_heads
        if self.q_lora_rank is None:
            self.q_proj = build_linear(
                config.hidden_size, heads * self.qk_head_dim, config, plan.get("layers.*.self_attn.q_proj")
            )
        else:
            self.q_a_proj = nn.Linear(config.hidden_size, self.q_lora_rank, bias_attr=None if bias else False)
            self.q_a_layernorm = DeepseekV3RMSNorm(self.q_lora_rank)
            self.q_b_proj = build_linear(
                self.q_lora_rank, heads * self.qk_head_dim, config, plan.get("layers.*.self_attn.q_b_proj")
            )
        self.kv_a_proj_with_mqa = nn.Linear(
            config.hidden_size, self.kv_lora_rank + self.qk_rope_head_dim, bias_attr=None if bias else False
        )
        self.kv_a_layernorm = DeepseekV3RMSNorm(self.kv_lora_rank)
        self.kv_b_proj = build_linear(
            self.kv_lora_rank,
            heads * (self.qk_nope_head_dim + self.v_head_dim),
            config,
            plan.get("layers.*.self_attn.kv_b_proj"),
        )
        self.o_proj = build_linear(
            heads * self.v_head_dim, config.hidden_size, config, plan.get("layers.*.self_attn.o_proj"), bias
        )
        self.scaling = self.qk_head_dim**-0.5
        if config.rope_scaling is not None and config.rope_scaling.get("mscale_all_dim", 0):
            mscale = yarn_get_mscale(config.rope_scaling["factor"], config.rope_scaling["mscale_all_dim"])
            self.scaling = self.scaling * mscale * mscale

    def project_qkv(
        self, hidden_states: paddle.Tensor, hidden_shape: list[int]
    ) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        """q and k [batch, seq, heads, nope + rope], the rope part last (and de-interleaved with
        ``rope_interleave``), v [batch, seq, heads, v_head_dim]; before RoPE."""
        batch_seq = hidden_shape[:2]
        if self.q_lora_rank is None:
            query_states = self.q_proj(hidden_states)
        else:
            query_states = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(hidden_states)))
        query_states = query_states.reshape([*batch_seq, -1, self.qk_head_dim])
        latent, k_rot = self.kv_a_proj_with_mqa(hidden_states).split(
            [self.kv_lora_rank, self.qk_rope_head_dim], axis=-1
        )
        kv = self.kv_b_proj(self.kv_a_layernorm(latent))
        k_pass, value_states = kv.reshape([*batch_seq, -1, self.qk_nope_head_dim + self.v_head_dim]).split(
            [self.qk_nope_head_dim, self.v_head_dim], axis=-1
        )
        # One rope key for every head; under TP each rank's heads give it only part of its gradient.
        k_rot = replicated_input(k_rot, self.config).reshape([*batch_seq, 1, self.qk_rope_head_dim])
        key_states = paddle.concat([k_pass, k_rot.expand([*k_pass.shape[:-1], self.qk_rope_head_dim])], axis=-1)
        if self.config.rope_interleave:
            query_states = deinterleave_rope(query_states, self.qk_rope_head_dim)
            key_states = deinterleave_rope(key_states, self.qk_rope_head_dim)
        return query_states, key_states, value_states


class DeepseekV3RMSNorm(LlamaRMSNorm):
    pass


class DeepseekV3TopkRouter(nn.Layer):
    """Router weight [n_routed_experts, hidden] (HF's layout); ``e_score_correction_bias`` is a persistent buffer, as
    in HF: in checkpoints, never trained by the loss (it steers the selection only)."""

    def __init__(self, config: DeepseekV3Config):
        super().__init__()
        self.config = config
        self.weight = self.create_parameter(
            [config.n_routed_experts, config.hidden_size],
            default_initializer=nn.initializer.Normal(0.0, config.initializer_range),
        )
        self.register_buffer("e_score_correction_bias", paddle.zeros([config.n_routed_experts]), persistable=True)

    def forward(self, hidden_states: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """(expert indices, routing weights), each [tokens, num_experts_per_tok], for tokens [n, hidden]."""
        config = self.config
        router_logits = paddle.matmul(hidden_states.astype("float32"), self.weight.astype("float32"), transpose_y=True)
        return sigmoid_topk_routing(
            router_logits,
            self.e_score_correction_bias,
            config.n_group,
            config.topk_group,
            config.num_experts_per_tok,
            config.norm_topk_prob,
            config.routed_scaling_factor,
        )


class DeepseekV3MoE(nn.Layer):
    def __init__(self, config: DeepseekV3Config):
        super().__init__()
        self.experts = nn.LayerList(
            [
                DeepseekV3MLP(config, config.moe_intermediate_size, plan_prefix="layers.*.mlp.experts.*")
                for _ in range(config.n_routed_experts)
            ]
        )
        self.gate = DeepseekV3TopkRouter(config)
        self.shared_experts = DeepseekV3MLP(
            config, config.moe_intermediate_size * config.n_shared_experts, plan_prefix="layers.*.mlp.shared_experts"
        )

    def forward(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        tokens = hidden_states.reshape([-1, hidden_states.shape[-1]])
        routed = combine_experts(self.experts, tokens, *self.gate(tokens))
        return (routed + self.shared_experts(tokens)).reshape(hidden_states.shape)


class DeepseekV3DecoderLayer(LlamaDecoderLayer):
    def __init__(self, config: DeepseekV3Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.mlp = DeepseekV3MoE(config) if layer_idx >= config.first_k_dense_replace else DeepseekV3MLP(config)


class DeepseekV3PretrainedModel(LlamaPretrainedModel):
    _checkpoint_skips: ClassVar[dict[str, str]] = {
        r"(^|\.)rotary_emb\.inv_freq$": "a buffer older HF checkpoints carry; recomputed from the config",
        r"^model\.layers\.61\.": "DeepSeek-V3's multi-token-prediction layer, which HF's model does not load either",
    }

    @classmethod
    def _layer_param_actions(cls, config: DeepseekV3Config, layer_idx: int) -> dict[str, str | None]:
        actions = {"input_layernorm.weight": None, "post_attention_layernorm.weight": None}
        attn = ["kv_a_proj_with_mqa", "kv_b_proj", "o_proj"] + (
            ["q_proj"] if config.q_lora_rank is None else ["q_a_proj", "q_b_proj"]
        )
        actions |= {f"self_attn.{p}.weight": "transpose" for p in attn}
        actions |= {"self_attn.kv_a_layernorm.weight": None}
        if config.q_lora_rank is not None:
            actions |= {"self_attn.q_a_layernorm.weight": None}
        if config.attention_bias:
            actions |= {f"self_attn.{p}.bias": None for p in ("q_a_proj", "kv_a_proj_with_mqa", "o_proj") if p in attn}
        mlps = ["mlp"]
        if layer_idx >= config.first_k_dense_replace:
            mlps = [f"mlp.experts.{e}" for e in range(config.n_routed_experts)] + ["mlp.shared_experts"]
            actions |= {"mlp.gate.weight": None, "mlp.gate.e_score_correction_bias": None}
        return actions | {f"{m}.{p}_proj.weight": "transpose" for m in mlps for p in ("gate", "up", "down")}


class DeepseekV3Model(LlamaModel):
    pass


class DeepseekV3ForCausalLM(LlamaForCausalLM):
    pass
