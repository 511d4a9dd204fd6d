"""Shared by the engine tests: a tiny config written as YAML and read back through the real loader."""

from __future__ import annotations

from pathlib import Path

import yaml

from modbuild.engine.config import Config, load

TINY_MODEL = {
    "vocab_size": 128,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "tie_word_embeddings": False,
    "attention_dropout": 0.1,  # dropout on: exact resume must restore Paddle's RNG too
}


def tiny_yaml(tmp: Path, name: str = "tiny.yaml", **sections) -> Path:
    """A tiny qwen2 on the Zen of Python's neighbour text; `sections` replace whole sections."""
    data = {
        "Global": {"seed": 7},
        "Engine": {
            "max_steps": 8,
            "accumulate_steps": 2,
            "logging_freq": 1,
            "num_train_epochs": 100,
            "progress_bar": False,
            "save_load": {"output_dir": str(tmp / "out")},
        },
        "Model": {"name": "qwen2", "config": dict(TINY_MODEL)},
        "Data": {
            "source": "pydoc_data:topics.py",
            "max_bytes": 480,  # 15 windows: 12 train (3 steps an epoch, so 8 steps cross two epoch ends), 3 eval
            "seq_length": 32,
            "micro_batch_size": 2,
            "eval_fraction": 0.2,
        },
        "Optimizer": {"lr": 3e-3, "warmup_steps": 2, "weight_decay": 0.1},
    }
    data.update(sections)
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path


def tiny_config(tmp: Path, *overrides: str) -> Config:
    return load(tiny_yaml(tmp), list(overrides))
