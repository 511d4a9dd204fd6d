"""The PaddleNLP base of the generated decoder-only models: HF checkpoint names, tensor-parallel split rules
derived from the TP plan, weight initialisation and the causal LM loss.

The parameter layout is HF's decoder-only one: ``embed_tokens``, ``layers.N.*``, ``norm`` in the base model
(``model.`` in HF checkpoints, ``<base_model_prefix>.`` here), and ``lm_head`` unless the embeddings are tied.
A model lists its decoder layer's parameters in ``_layer_param_actions`` (and extends ``_base_param_actions`` for
other base-model parameters); ``_lm_head_bias`` gives the untied ``lm_head`` a bias. A checkpoint that spells the
layout otherwise (GPT-J: ``transformer.wte``, ``transformer.h.N.attn.out_proj``, ``transformer.ln_f``) sets
``_hf_base_prefix`` and ``_hf_renames`` (our name segment -> HF's). ``_checkpoint_skips`` declares the keys a
checkpoint may carry that are not parameters (``modbuild.weights.convert`` skips and logs them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import paddle
from paddle import nn
from paddlenlp.transformers.conversion_utils import StateDictNameMapping
from paddlenlp.transformers.model_utils import PretrainedModel

from modbuild.nn.losses import token_cross_entropy
from modbuild.nn.parallel import init_dense_weights, tensor_parallel_actions


class DecoderPretrainedModel(PretrainedModel):
    # Plan for modules outside the base model (a causal LM adds its lm_head).
    _tp_plan: ClassVar[dict[str, str]] = {}
    _lm_head_bias: ClassVar[bool] = False
    # The base model's prefix in HF checkpoints, and our name segments that HF spells otherwise.
    _hf_base_prefix: ClassVar[str] = "model"
    _hf_renames: ClassVar[dict[str, str]] = {}
    # Checkpoint keys that are not parameters -> why the weight converter skips them.
    _checkpoint_skips: ClassVar[dict[str, str]] = {
        r"(^|\.)rotary_emb\.inv_freq$": "a buffer older HF checkpoints carry; recomputed from the config",
    }

    @classmethod
    def _layer_param_actions(cls, config, layer_idx: int) -> dict[str, str | None]:
        """Decoder layer ``layer_idx``'s parameters (names after ``layers.N.``, HF's up to ``_hf_renames``) ->
        conversion action from HF."""
        raise NotImplementedError

    @classmethod
    def _base_param_actions(cls, config) -> dict[str, str | None]:
        """Every base-model parameter name (no prefix) -> conversion action from HF."""
        actions = {"embed_tokens.weight": None, "norm.weight": None}
        for i in range(config.num_hidden_layers):
            actions |= {f"layers.{i}.{name}": a for name, a in cls._layer_param_actions(config, i).items()}
        return actions

    @classmethod
    def _head_param_actions(cls, config) -> dict[str, str | None]:
        """The causal LM's parameters outside the base model -> conversion action from HF."""
        if config.tie_word_embeddings:
            return {}
        return {"lm_head.weight": "transpose"} | ({"lm_head.bias": None} if cls._lm_head_bias else {})

    @classmethod
    def _has_lm_head(cls, config) -> bool:
        return config.architectures is None or cls.base_model_class.__name__ not in config.architectures

    @classmethod
    def _hf_name(cls, name: str) -> str:
        return ".".join(cls._hf_renames.get(segment, segment) for segment in name.split("."))

    @classmethod
    def _get_name_mappings(cls, config) -> list[StateDictNameMapping]:
        """HF parameter names (``<_hf_base_prefix>.``) -> ours (``<base_model_prefix>.``), transposing Linear
        weights."""
        mappings = [[cls._hf_name(name), name, action] for name, action in cls._base_param_actions(config).items()]
        if cls._has_lm_head(config):
            mappings = [
                [f"{cls._hf_base_prefix}.{src}", f"{cls.base_model_prefix}.{dst}", a] for src, dst, a in mappings
            ]
            mappings += [[cls._hf_name(name), name, a] for name, a in cls._head_param_actions(config).items()]
        return [StateDictNameMapping(*mapping, index=index) for index, mapping in enumerate(mappings)]

    @classmethod
    def _get_tensor_parallel_mappings(cls, config, is_split: bool = True) -> dict[str, Callable]:
        names = [*cls._base_param_actions(config), *cls._head_param_actions(config)]
        plan = {**config.base_model_tp_plan, **cls._tp_plan}
        return tensor_parallel_actions(plan, names, config, is_split=is_split)

    def _init_weights(self, layer: nn.Layer) -> None:
        init_dense_weights(layer, self.config.initializer_range)

    @staticmethod
    def compute_loss(logits: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
        """Mean next-token cross entropy: position t predicts labels[t + 1]; label -100 is ignored."""
        return token_cross_entropy(logits[:, :-1], labels[:, 1:])
