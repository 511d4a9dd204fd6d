"""Tiny real checkpoints for the generate, from_pretrained and CLI-noise tests: a generated Llama saved by its own
`save_pretrained` with a word-level tokenizer, and the same converted to HF by the weights converter. No torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

WORDS = ["the", "capital", "of", "france", "is", "paris", "a", "b", "c", "d"]
# What a quiet command must not print: paddle's and setuptools' import warnings, tqdm bars, INFO log lines.
NOISE = ("ccache", "distutils", "\r", "█", "it/s]", "INFO")


def write_tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "</s>": 1} | {word: i + 2 for i, word in enumerate(WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", eos_token="</s>").save_pretrained(directory)


def write_tiny_llama(root: Path, **config) -> tuple[Path, Path]:
    """(Paddle checkpoint, HF checkpoint) of one tiny random Llama under `root`."""
    import paddle

    from modbuild.models import causal_lm_class, config_class
    from modbuild.verify.specs import TINY
    from modbuild.weights import convert_paddle_to_hf

    paddle.seed(0)
    model = causal_lm_class("llama")(config_class("llama")(**TINY | config, architectures=["LlamaForCausalLM"]))
    model.save_pretrained(root / "paddle", safe_serialization=True)
    write_tokenizer(root / "paddle")
    return root / "paddle", convert_paddle_to_hf(root / "paddle", root / "hf")


def run_quiet_check(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run a command with stdout and stderr piped, in an environment without the filters a command sets for the
    processes it starts (an earlier in-process test may have set them in ours)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "TQDM_DISABLE")}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def noise(stderr: str) -> list[str]:
    return [word for word in NOISE if word in stderr]
