"""What each model is checked against: tiny configs and the matching HF / PaddleNLP classes."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

TINY = {
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "rope_theta": 50000.0,
}


@dataclass(frozen=True)
class ModelSpec:
    model_type: str
    camel: str
    hf_class: str  # transformers causal-LM class
    config: dict = field(default_factory=dict)  # on top of TINY, for both sides
    paddlenlp_class: str | None = None  # PaddleNLP's hand-written model, where one exists and works
    paddlenlp_note: str = ""
    norm_mean: float = 1.0  # where re-randomised norm weights are centred (0 for gemma's 1 + w)


SPECS = {
    s.model_type: s
    for s in [
        ModelSpec("llama", "Llama", "LlamaForCausalLM", paddlenlp_class="LlamaForCausalLM"),
        ModelSpec(
            "qwen2",
            "Qwen2",
            "Qwen2ForCausalLM",
            {"use_sliding_window": True, "sliding_window": 6, "max_window_layers": 1},
            paddlenlp_class="Qwen2ForCausalLM",
            paddlenlp_note="PaddleNLP's Qwen2 ignores the sliding window: compared with the window off",
        ),
    ]
}


def spec(model: str) -> ModelSpec:
    try:
        return SPECS[model]
    except KeyError:
        raise KeyError(f"no verification spec for model '{model}' in modbuild/verify/specs.py") from None


def generated(model: str) -> tuple[ModuleType, ModuleType]:
    """(modeling, configuration) modules of a generated model."""
    modeling = importlib.import_module(f"generated.{model}.modeling_{model}")
    config = importlib.import_module(f"generated.{model}.configuration_{model}")
    return modeling, config


def left_padded_batch(vocab: int, seed: int = 0, length: int = 10, pads: int = 4) -> dict[str, np.ndarray]:
    """Two rows, the first left-padded; labels ignore the padding (-100), as HF does."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(2, length)).astype("int64")
    mask = np.ones((2, length), dtype="int64")
    mask[0, :pads] = 0
    ids[0, :pads] = 0
    labels = np.where(mask == 1, ids, -100)
    position_ids = np.clip(mask.cumsum(-1) - 1, 0, None)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "position_ids": position_ids}
