"""Language-model losses, averaged as HF averages them."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F


def token_cross_entropy(logits: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
    """Mean cross entropy over the labelled positions (label -100 is ignored), in float32.

    Paddle's ``reduction="mean"`` divides by every position; HF divides by the labelled ones."""
    flat_labels = labels.reshape([-1])
    flat_logits = logits.astype("float32").reshape([-1, logits.shape[-1]])
    losses = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100, reduction="none")
    return losses.sum() / (flat_labels != -100).sum().astype(losses.dtype)
