"""The real-size configs the precision table is measured at, the seed's bounds, and the batch.

The configs are Qwen2-0.5B's and Qwen2-1.5B's published ``config.json`` (base models; the -Instruct repos differ
only in ``max_position_embeddings`` 32768 and the eos token, neither of which moves a number here: RoPE is
computed from the positions, never from a table sized by ``max_position_embeddings``). The weights are random,
drawn by HF's own init (``initializer_range`` 0.02, biases 0, norm weights 1): no checkpoint is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_QWEN2_COMMON = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "vocab_size": 151936,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 131072,
    "sliding_window": 131072,
    "use_sliding_window": False,
    "tie_word_embeddings": True,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "use_cache": True,
}


@dataclass(frozen=True)
class Size:
    """One row group of the table: a model at one size, and the seed's bounds for it (fp32, max |diff|)."""

    name: str  # the CLI / doit name: "0.5b"
    model: str  # as the seed's table names it
    label: str  # the size column
    config: dict  # HF config.json fields
    bounds: dict[str, float] = field(default_factory=dict)


def _bounds(logits: float, loss: float, tensors: float) -> dict[str, float]:
    """The seed's three columns; "each tensor in all layers" bounds forward outputs and gradients alike."""
    return {"logits": logits, "loss": loss, "forward": tensors, "grads": tensors}


SIZES: dict[str, Size] = {
    "0.5b": Size(
        "0.5b",
        "Qwen/Qwen2-0.5B",
        "0.5B",
        _QWEN2_COMMON
        | {
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "max_window_layers": 24,
        },
        _bounds(1e-4, 1e-5, 1e-4),
    ),
    "1.5b": Size(
        "1.5b",
        "Qwen/Qwen2-1.5B",
        "1.5B",
        _QWEN2_COMMON
        | {
            "hidden_size": 1536,
            "intermediate_size": 8960,
            "num_hidden_layers": 28,
            "num_attention_heads": 12,
            "num_key_value_heads": 2,
            "max_window_layers": 28,
        },
        _bounds(1e-3, 1e-5, 1e-3),
    ),
    # The smoke test's config: the same pipeline in seconds. Bounded like 0.5B.
    "tiny": Size(
        "tiny",
        "Qwen2 (tiny)",
        "tiny",
        _QWEN2_COMMON
        | {
            "vocab_size": 256,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "max_window_layers": 2,
        },
        _bounds(1e-4, 1e-5, 1e-4),
    ),
}
DEFAULT_SIZES = ["0.5b", "1.5b"]


def batch(vocab: int, rows: int = 2, length: int = 48, pads: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """`rows` rows of `length` token ids, the first left-padded by `pads` (labels -100 there, as HF ignores).

    Ids are uniform over the vocabulary (no tokenizer is needed for random weights). Position ids count real
    tokens only, and both frameworks are given them, so a left-padded row sees the same RoPE angles on both."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(rows, length)).astype("int64")
    mask = np.ones((rows, length), dtype="int64")
    mask[0, :pads] = 0
    ids[0, :pads] = 0
    labels = np.where(mask == 1, ids, -100)
    position_ids = np.clip(mask.cumsum(-1) - 1, 0, None)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids, "labels": labels}
