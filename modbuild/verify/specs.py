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
    paddlenlp_config: dict = field(default_factory=dict)  # where the reference is known to differ
    norm_mean: float = 1.0  # where re-randomised norm weights are centred (0 for gemma's 1 + w)


MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}

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
            paddlenlp_config={"use_sliding_window": False},
        ),
        ModelSpec(
            "mistral",
            "Mistral",
            "MistralForCausalLM",
            {"sliding_window": 6},
            paddlenlp_class="MistralForCausalLM",
            paddlenlp_note="PaddleNLP's Mistral disagrees with HF once the window is active (5.3 on logits at window 6): "
            "compared with a window longer than the batch",
            paddlenlp_config={"sliding_window": 4096},
        ),
        ModelSpec(
            "gemma",
            "Gemma",
            "GemmaForCausalLM",
            {"head_dim": 32},
            paddlenlp_class="GemmaForCausalLM",
            paddlenlp_note="PaddleNLP's Gemma MLP uses exact GeLU where HF uses the tanh approximation: compared with hidden_act='gelu'",
            paddlenlp_config={"hidden_act": "gelu"},
            norm_mean=0.0,
        ),
        ModelSpec("qwen3", "Qwen3", "Qwen3ForCausalLM", {"head_dim": 32}),
        ModelSpec(
            "qwen2_moe",
            "Qwen2Moe",
            "Qwen2MoeForCausalLM",
            {**MOE, "shared_expert_intermediate_size": 48},
            paddlenlp_class="Qwen2MoeForCausalLM",
        ),
        ModelSpec(
            "mixtral",
            "Mixtral",
            "MixtralForCausalLM",
            {"num_local_experts": 4, "num_experts_per_tok": 2},
            paddlenlp_class="MixtralForCausalLM",
        ),
        ModelSpec("qwen3_moe", "Qwen3Moe", "Qwen3MoeForCausalLM", {**MOE, "norm_topk_prob": True, "head_dim": 32}),
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
