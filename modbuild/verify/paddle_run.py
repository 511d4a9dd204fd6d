"""Run a Paddle causal LM on a batch and collect what the checks compare: logits, loss, gradients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import paddle


@dataclass
class Outputs:
    logits: np.ndarray
    loss: float
    grads: dict[str, np.ndarray]


def is_norm_weight(name: str, param) -> bool:
    """A normalisation layer's scale: a 1-D parameter with "norm" in its name.

    In the eight generated models and their HF and PaddleNLP counterparts these are ``input_layernorm``,
    ``post_attention_layernorm``, the final ``norm`` and Qwen3's ``q_norm`` / ``k_norm`` weights; "norm" alone
    selects the same parameters today, the 1-D condition keeps a matrix under a "norm"-named module out. Qwen2's
    q/k/v biases are 1-D but not norms. Takes paddle or torch parameters (anything with a ``shape``)."""
    return len(param.shape) == 1 and "norm" in name


def randomize(model: paddle.nn.Layer, std: float = 0.2, norm_mean: float = 1.0, seed: int = 0) -> None:
    """Re-draw every parameter ~ N(0, std), norm weights (`is_norm_weight`) ~ N(norm_mean, std), then every
    persistent float buffer ~ N(0, std).

    The std is large on purpose: at 0.02 a wrong rope_theta moves logits by only 3e-3. `norm_mean` is 1 for
    ``x * w`` norms and 0 for Gemma's ``x * (1 + w)``. The values come from numpy's generator seeded with `seed`,
    drawn in sorted parameter-name order: the same weights in every process (each rank of the TP check draws its
    own full copy), whatever paddle's RNG state, and paddle's RNG is left untouched.
    """
    rng = np.random.default_rng(seed)
    for name, param in sorted(model.named_parameters()):
        mean = norm_mean if is_norm_weight(name, param) else 0.0
        values = rng.normal(mean, std, tuple(param.shape)).astype("float32")
        param.set_value(paddle.to_tensor(values).astype(param.dtype))
    # Then the float buffers a checkpoint carries (DeepSeek-V3's router correction bias), N(0, std).
    saved = model.state_dict()
    for name, buffer in sorted(model.named_buffers()):
        if name in saved and paddle.is_floating_point(buffer):
            buffer.set_value(paddle.to_tensor(rng.normal(0.0, std, tuple(buffer.shape)).astype("float32")))


def run(model: paddle.nn.Layer, batch: dict[str, np.ndarray], backward: bool = True) -> Outputs:
    model.eval()
    model.clear_gradients()
    # Every input the HF side gets too: an encoder's positions count padding (HF's BERT), a decoder's do not.
    out = model(**{name: paddle.to_tensor(value) for name, value in batch.items()}, return_dict=True)
    if backward:
        out.loss.backward()
    grads = {n: p.grad.numpy() for n, p in model.named_parameters() if backward and p.grad is not None}
    return Outputs(out.logits.numpy(), float(out.loss.item()), grads)


def greedy(model: paddle.nn.Layer, ids: np.ndarray, new_tokens: int = 8) -> list[int]:
    """Greedy decoding with the KV cache, exactly `new_tokens` tokens."""
    from modbuild.generate import greedy_tokens

    return greedy_tokens(model, ids, new_tokens)


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype("float64") - b.astype("float64")).max()) if a.size else 0.0


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.abs(b).max())
    return max_abs(a, b) / scale if scale else max_abs(a, b)


# A reference gradient below this fraction of the model's largest is zero up to float rounding.
ZERO_GRAD = 1e-6


def grad_rel(grad: np.ndarray, reference: np.ndarray, largest: float) -> tuple[float, bool]:
    """(max |diff| / max |reference|, whether the reference gradient vanishes).

    A gradient that is zero in exact arithmetic (BERT's key bias: softmax ignores a constant added to every score
    of a query) holds rounding noise on both sides, and noise over noise says nothing; it is measured against the
    model's ``largest`` gradient instead."""
    if reference.size and np.abs(reference).max() < ZERO_GRAD * largest:
        return max_abs(grad, reference) / largest, True
    return max_rel(grad, reference), False
