"""verify:<m>:paddlenlp: the generated model against PaddleNLP's hand-written model, same weights.

A decoder's weights are handed over in memory, renamed through both models' HF name mappings. An encoder's go
through files the way a user's would: ours saved, converted to HF, then to PaddleNLP's naming (``modbuild.weights``,
``naming="paddlenlp"``), and loaded with the PaddleNLP model's own ``from_pretrained``.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import paddle
import paddlenlp.transformers as reference_models

from modbuild.verify.paddle_run import max_abs, randomize
from modbuild.verify.record import Record, first_line
from modbuild.verify.specs import TINY, generated, left_padded_batch, spec
from modbuild.weights.convert import convert_hf_to_paddle, convert_paddle_to_hf, skip_rules

BOUNDS = {"logits": 1e-5, "missing_keys": 0.0}


def _logits(model: paddle.nn.Layer, batch: dict[str, np.ndarray]) -> np.ndarray:
    model.eval()
    with paddle.no_grad():
        out = model(
            input_ids=paddle.to_tensor(batch["input_ids"]),
            attention_mask=paddle.to_tensor(batch["attention_mask"]),
            position_ids=paddle.to_tensor(batch["position_ids"]),
            return_dict=True,
        )
    return out.logits.numpy()


def reference_models_version() -> str:
    from importlib.metadata import version

    return version("paddlenlp")


def build_pair(model: str, modeling=None) -> tuple[paddle.nn.Layer, paddle.nn.Layer]:
    """Our model (std-0.2 weights) and PaddleNLP's, from the same config."""
    sp = spec(model)
    kwargs = {**TINY, **sp.config, **sp.paddlenlp_config}
    modeling = modeling or generated(model)[0]
    cls = getattr(modeling, f"{sp.camel}ForCausalLM")
    ours = cls(cls.config_class(**kwargs))
    randomize(ours, norm_mean=sp.norm_mean)
    ref_cls = getattr(reference_models, sp.paddlenlp_class)
    return ours, ref_cls(ref_cls.config_class(**kwargs))


def _hf_names(cls: type, config, names) -> dict[str, str]:
    """HF parameter name -> the model's own, from its `_get_name_mappings`; a model without mappings (PaddleNLP's
    GPT-J) names its parameters `names` as HF does."""
    config.architectures = [cls.__name__]
    try:
        return {m.source_name: m.target_name for m in cls._get_name_mappings(config)}
    except NotImplementedError:
        return {name: name for name in names}


def reference_keys(ours: paddle.nn.Layer, reference: paddle.nn.Layer) -> set[str]:
    """The reference's state-dict keys less those our model declares to be buffers (`_checkpoint_skips`: PaddleNLP's
    GPT-J keeps its causal mask `attn.bias` in its state dict); the reference builds those itself."""
    skips = skip_rules(type(ours))
    return {key for key in reference.state_dict() if not any(re.search(pattern, key) for pattern in skips)}


def reference_state(ours: paddle.nn.Layer, reference: paddle.nn.Layer) -> dict:
    """Our weights under the reference's names: where they differ (Mixtral's `mlp` vs PaddleNLP's
    `block_sparse_moe`) both sides' HF name mappings translate them. A reference that keeps a tied
    lm_head gets the embedding."""
    state = dict(ours.state_dict())
    ref_state = reference.state_dict()
    if set(state) - set(ref_state) - {"lm_head.weight"}:
        mine = _hf_names(type(ours), ours.config, state)
        theirs = _hf_names(type(reference), reference.config, reference_keys(ours, reference))
        state = {theirs[hf]: state[name] for hf, name in mine.items() if hf in theirs and name in state}
    if "lm_head.weight" in ref_state and "lm_head.weight" not in state:
        embed = next(v for k, v in state.items() if k.endswith("embed_tokens.weight"))
        shape = list(ref_state["lm_head.weight"].shape)
        state["lm_head.weight"] = embed if list(embed.shape) == shape else embed.T
    return state


def check_paddlenlp(model: str) -> Record:
    sp = spec(model)
    record = Record(model, "paddlenlp", bounds=dict(BOUNDS))
    if sp.paddlenlp_class is None:
        record.notes.append(f"PaddleNLP {reference_models_version()} has no hand-written {sp.camel} model")
        record.bounds = {}
        return record
    if sp.paddlenlp_note:
        record.notes.append(sp.paddlenlp_note)
    if not sp.causal:
        return _check_encoder(model, record)
    ours, reference = build_pair(model)
    state = reference_state(ours, reference)
    missing = sorted(reference_keys(ours, reference) ^ set(state))
    record.metrics["missing_keys"] = float(len(missing))
    if missing:
        record.notes.append(f"parameter names differ: {missing[:5]}")
        return record
    reference.set_state_dict(state)
    batch = left_padded_batch(TINY["vocab_size"])
    real = batch["attention_mask"].astype(bool)
    try:
        theirs = _logits(reference, batch)
    except Exception as exc:  # the reference itself is broken here: nothing to compare against, said so
        record.bounds = {}
        record.notes.append(f"PaddleNLP's {sp.paddlenlp_class} fails on this machine: {first_line(exc)}")
        return record
    record.metrics["logits"] = max_abs(_logits(ours, batch)[real], theirs[real])
    return record


def _check_encoder(model: str, record: Record) -> Record:
    """Our base model (``<camel>Model``) against PaddleNLP's, on the batch's real tokens: hidden states and pooler."""
    sp = spec(model)
    del record.bounds["missing_keys"]  # the conversion checks the names against PaddleNLP's model
    record.bounds["pooled"] = BOUNDS["logits"]
    cls = getattr(generated(model)[0], f"{sp.camel}Model")
    ours = cls(cls.config_class(**{**TINY, **sp.config, **sp.paddlenlp_config}))
    randomize(ours, norm_mean=sp.norm_mean)
    ours.eval()
    ref_cls = getattr(reference_models, sp.paddlenlp_class)
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(Path(tmp) / "ours", safe_serialization=True)
        convert_paddle_to_hf(Path(tmp) / "ours", Path(tmp) / "hf")
        convert_hf_to_paddle(Path(tmp) / "hf", Path(tmp) / "paddlenlp", naming="paddlenlp")
        reference = ref_cls.from_pretrained(Path(tmp) / "paddlenlp", dtype="float32")
    reference.eval()
    batch = left_padded_batch(TINY["vocab_size"])
    inputs = {k: paddle.to_tensor(batch[k]) for k in ("input_ids", "attention_mask")}
    with paddle.no_grad():
        mine, theirs = ours(**inputs, return_dict=True), reference(**inputs, return_dict=True)
    real = batch["attention_mask"].astype(bool)
    record.metrics["logits"] = max_abs(mine.last_hidden_state.numpy()[real], theirs.last_hidden_state.numpy()[real])
    record.metrics["pooled"] = max_abs(mine.pooler_output.numpy(), theirs.pooler_output.numpy())
    record.notes.append(f"{ref_cls.__name__} loaded a --naming paddlenlp checkpoint; logits = last hidden states")
    return record
