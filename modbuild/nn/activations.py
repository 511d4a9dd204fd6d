"""Activations by HF name."""

from __future__ import annotations

from collections.abc import Callable

import paddle
from paddle import nn
from paddlenlp.transformers.activations import ACT2FN


def get_activation(name: str) -> Callable[[paddle.Tensor], paddle.Tensor]:
    """An HF activation by name: paddlenlp's ``ACT2FN`` lacks "gelu_pytorch_tanh" (GeLU, tanh approximation)."""
    return nn.GELU(approximate=True) if name == "gelu_pytorch_tanh" else ACT2FN[name]
