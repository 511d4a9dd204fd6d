"""BERT in PaddlePaddle, written HF-style: token, position and token-type embeddings, a post-LN encoder, the
pooler and the masked-LM head, whose decoder is the word embedding table (tied, so it has no weight of its own).

Parameter names are HF's (``embeddings.LayerNorm``, ``encoder.layer.N.attention.self.query`` ...), with Linear
weights stored [in, out] as Paddle keeps them. Hidden states are [batch, seq, hidden].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import paddle
from paddle import nn
from paddlenlp.transformers.configuration_utils import PretrainedConfig
from paddlenlp.transformers.conversion_utils import StateDictNameMapping
from paddlenlp.transformers.model_outputs import BaseModelOutputWithPooling, MaskedLMOutput
from paddlenlp.transformers.model_utils import PretrainedModel, register_base_model

from modbuild.nn.activations import get_activation
from modbuild.nn.attention import attention_function
from modbuild.nn.losses import token_cross_entropy
from modbuild.nn.masks import padding_mask
from modbuild.nn.parallel import (
    build_embedding,
    build_linear,
    init_dense_weights,
    tensor_parallel_actions,
    tied_logits,
)


class BertConfig(PretrainedConfig):
    """HF ``BertConfig`` fields and defaults. Only absolute position embeddings exist here.

    ``use_flash_attention`` selects the SDPA attention kernel.
    """

    model_type = "bert"
    base_model_tp_plan: ClassVar[dict[str, str]] = {
        "embeddings.word_embeddings": "vocab",
        "encoder.layer.*.attention.self.query": "colwise",
        "encoder.layer.*.attention.self.key": "colwise",
        "encoder.layer.*.attention.self.value": "colwise",
        "encoder.layer.*.attention.output.dense": "rowwise",
        "encoder.layer.*.intermediate.dense": "colwise",
        "encoder.layer.*.output.dense": "rowwise",
    }

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
        position_embedding_type: str = "absolute",
        classifier_dropout: float | None = None,
        use_flash_attention: bool = False,
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, use_flash_attention=use_flash_attention, **kwargs)
        if position_embedding_type != "absolute":
            raise ValueError(f"position_embedding_type {position_embedding_type!r}: only 'absolute' is implemented")
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.position_embedding_type = position_embedding_type
        self.classifier_dropout = classifier_dropout


class BertEmbeddings(nn.Layer):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = build_embedding(
            config.vocab_size, config.hidden_size, config, config.base_model_tp_plan.get("embeddings.word_embeddings")
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: paddle.Tensor,
        token_type_ids: paddle.Tensor | None = None,
        position_ids: paddle.Tensor | None = None,
    ) -> paddle.Tensor:
        # Positions count from the first column, padding included, as in HF's BERT.
        if position_ids is None:
            position_ids = paddle.arange(input_ids.shape[1]).expand(input_ids.shape)
        if token_type_ids is None:
            token_type_ids = paddle.zeros_like(input_ids)
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Layer):
    def __init__(self, config: BertConfig):
        super().__init__()
        plan = config.base_model_tp_plan
        self.config = config
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_heads = config.num_attention_heads // config.tensor_parallel_degree  # on this rank
        self.num_key_value_groups = 1
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_probs_dropout_prob
        self.query, self.key, self.value = (
            build_linear(
                config.hidden_size,
                config.hidden_size,
                config,
                plan.get(f"encoder.layer.*.attention.self.{name}"),
                True,
            )
            for name in ("query", "key", "value")
        )

    def forward(self, hidden_states: paddle.Tensor, attention_mask: paddle.Tensor) -> paddle.Tensor:
        hidden_shape = [*hidden_states.shape[:2], -1, self.head_dim]
        attn_output, _ = attention_function(self.config)(
            self,
            self.query(hidden_states).reshape(hidden_shape),
            self.key(hidden_states).reshape(hidden_shape),
            self.value(hidden_states).reshape(hidden_shape),
            attention_mask,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
        )
        return attn_output.reshape([*hidden_states.shape[:2], self.num_heads * self.head_dim])


class BertSelfOutput(nn.Layer):
    """The attention's output projection, then dropout, the residual and LayerNorm (post-LN)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        plan = config.base_model_tp_plan.get("encoder.layer.*.attention.output.dense")
        self.dense = build_linear(config.hidden_size, config.hidden_size, config, plan, True)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: paddle.Tensor, residual: paddle.Tensor) -> paddle.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class BertAttention(nn.Layer):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden_states: paddle.Tensor, attention_mask: paddle.Tensor) -> paddle.Tensor:
        return self.output(self.self(hidden_states, attention_mask), hidden_states)


class BertIntermediate(nn.Layer):
    def __init__(self, config: BertConfig):
        super().__init__()
        plan = config.base_model_tp_plan.get("encoder.layer.*.intermediate.dense")
        self.dense = build_linear(config.hidden_size, config.intermediate_size, config, plan, True)
        self.intermediate_act_fn = get_activation(config.hidden_act)

    def forward(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class BertOutput(BertSelfOutput):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        plan = config.base_model_tp_plan.get("encoder.layer.*.output.dense")
        self.dense = build_linear(config.intermediate_size, config.hidden_size, config, plan, True)


class BertLayer(nn.Layer):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden_states: paddle.Tensor, attention_mask: paddle.Tensor) -> paddle.Tensor:
        attention_output = self.attention(hidden_states, attention_mask)
        return self.output(self.intermediate(attention_output), attention_output)


class BertEncoder(nn.Layer):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.LayerList([BertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden_states: paddle.Tensor, attention_mask: paddle.Tensor) -> paddle.Tensor:
        for layer in self.layer:
            hidden_states = layer(hidden_states, attention_mask)
        return hidden_states


class BertPooler(nn.Layer):
    """tanh(dense(first token's hidden state))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        return paddle.tanh(self.dense(hidden_states[:, 0]))


class BertPretrainedModel(PretrainedModel):
    config_class = BertConfig
    base_model_prefix = "bert"
    # Checkpoint keys that are not parameters -> why conversion skips them.
    _checkpoint_skips: ClassVar[dict[str, str]] = {
        r"(^|\.)embeddings\.(position_ids|token_type_ids)$": "a buffer, not a parameter",
    }
    # Legacy checkpoint spellings -> current ones (TF-era BERT names LayerNorm parameters gamma/beta).
    _checkpoint_aliases: ClassVar[dict[str, str]] = {
        r"LayerNorm\.gamma$": "LayerNorm.weight",
        r"LayerNorm\.beta$": "LayerNorm.bias",
    }

    @classmethod
    def _base_param_actions(cls, config: BertConfig) -> dict[str, str | None]:
        """Every ``BertModel`` parameter (HF names) -> conversion action from HF."""
        actions = {f"embeddings.{e}_embeddings.weight": None for e in ("word", "position", "token_type")}
        actions |= {"embeddings.LayerNorm.weight": None, "embeddings.LayerNorm.bias": None}
        dense = [f"attention.self.{p}" for p in ("query", "key", "value")]
        dense += ["attention.output.dense", "intermediate.dense", "output.dense"]
        for i in range(config.num_hidden_layers):
            for name in dense:
                actions |= {f"encoder.layer.{i}.{name}.weight": "transpose", f"encoder.layer.{i}.{name}.bias": None}
            for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
                actions |= {f"encoder.layer.{i}.{norm}.weight": None, f"encoder.layer.{i}.{norm}.bias": None}
        return actions | {"pooler.dense.weight": "transpose", "pooler.dense.bias": None}

    @classmethod
    def _param_actions(cls, config: BertConfig) -> dict[str, str | None]:
        """This model's parameters (HF names, the same as ours) -> conversion action from HF."""
        return cls._base_param_actions(config)

    @classmethod
    def _get_name_mappings(cls, config: BertConfig) -> list[StateDictNameMapping]:
        actions = cls._param_actions(config).items()
        return [StateDictNameMapping(name, name, action, index=i) for i, (name, action) in enumerate(actions)]

    @classmethod
    def _get_tensor_parallel_mappings(cls, config: BertConfig, is_split: bool = True) -> dict[str, Callable]:
        # Base-model names: paddlenlp resolves the ``bert.`` prefix of a head model itself.
        names = list(cls._base_param_actions(config))
        return tensor_parallel_actions(config.base_model_tp_plan, names, config, is_split=is_split)

    def _init_weights(self, layer: nn.Layer) -> None:
        init_dense_weights(layer, self.config.initializer_range)

    @staticmethod
    def compute_loss(logits: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
        """Masked-LM cross entropy over the labelled positions (label -100 is ignored), as HF averages it."""
        return token_cross_entropy(logits, labels)


@register_base_model
class BertModel(BertPretrainedModel):
    # PaddleNLP's hand-written BERT (nn.TransformerEncoder naming), which `--naming paddlenlp` checkpoints load into.
    _paddlenlp_class: ClassVar[str] = "BertModel"
    _paddlenlp_renames: ClassVar[list[tuple[str, str]]] = [
        (r"^embeddings\.LayerNorm\.", "embeddings.layer_norm."),
        # query / key / value -> q_proj / k_proj / v_proj
        (r"^encoder\.layer\.(\d+)\.attention\.self\.(q|k|v)\w+\.", r"encoder.layers.\1.self_attn.\2_proj."),
        (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"encoder.layers.\1.self_attn.out_proj."),
        (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"encoder.layers.\1.norm1."),
        (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"encoder.layers.\1.linear1."),
        (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"encoder.layers.\1.linear2."),
        (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"encoder.layers.\1.norm2."),
    ]

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None

    def get_input_embeddings(self) -> nn.Layer:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Layer) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: paddle.Tensor,
        attention_mask: paddle.Tensor | None = None,
        token_type_ids: paddle.Tensor | None = None,
        position_ids: paddle.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        return_dict = self.config.return_dict if return_dict is None else return_dict
        hidden_states = self.embeddings(input_ids, token_type_ids, position_ids)
        hidden_states = self.encoder(hidden_states, padding_mask(attention_mask, *input_ids.shape))
        pooled = self.pooler(hidden_states) if self.pooler is not None else None
        if not return_dict:
            return tuple(v for v in (hidden_states, pooled) if v is not None)
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=pooled)


class BertPredictionHeadTransform(nn.Layer):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = get_activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)

    def forward(self, hidden_states: paddle.Tensor) -> paddle.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class BertLMPredictionHead(nn.Layer):
    """The transform, then logits against the word embeddings (the tied decoder) plus a bias per token."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.transform = BertPredictionHeadTransform(config)
        self.bias = self.create_parameter([config.vocab_size], is_bias=True)

    def forward(self, hidden_states: paddle.Tensor, word_embeddings: paddle.Tensor) -> paddle.Tensor:
        return tied_logits(self.transform(hidden_states), word_embeddings, self.config) + self.bias


class BertOnlyMLMHead(nn.Layer):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, hidden_states: paddle.Tensor, word_embeddings: paddle.Tensor) -> paddle.Tensor:
        return self.predictions(hidden_states, word_embeddings)


class BertForMaskedLM(BertPretrainedModel):
    _checkpoint_skips: ClassVar[dict[str, str]] = {
        **BertPretrainedModel._checkpoint_skips,
        r"^bert\.pooler\.": "BertForMaskedLM has no pooler",
        r"^cls\.seq_relationship\.": "the next-sentence head, which BertForMaskedLM has not",
    }
    # Copies of tied parameters that some checkpoints store: skipped once checked to be equal to their parameter.
    _checkpoint_tied: ClassVar[dict[str, str]] = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    @classmethod
    def _param_actions(cls, config: BertConfig) -> dict[str, str | None]:
        base = cls._base_param_actions(config)
        actions = {f"bert.{name}": action for name, action in base.items() if not name.startswith("pooler.")}
        actions |= {"cls.predictions.bias": None, "cls.predictions.transform.dense.weight": "transpose"}
        return actions | {
            f"cls.predictions.transform.{p}": None for p in ("dense.bias", "LayerNorm.weight", "LayerNorm.bias")
        }

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)

    def get_output_embeddings(self) -> None:
        return None  # tied: the decoder is the word embedding table

    def forward(
        self,
        input_ids: paddle.Tensor,
        attention_mask: paddle.Tensor | None = None,
        token_type_ids: paddle.Tensor | None = None,
        position_ids: paddle.Tensor | None = None,
        labels: paddle.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> MaskedLMOutput | tuple:
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.bert(input_ids, attention_mask, token_type_ids, position_ids, return_dict=True)
        logits = self.cls(outputs.last_hidden_state, self.bert.embeddings.word_embeddings.weight)
        loss = None if labels is None else self.compute_loss(logits, labels)
        if not return_dict:
            return tuple(v for v in (loss, logits) if v is not None)
        return MaskedLMOutput(loss=loss, logits=logits)
