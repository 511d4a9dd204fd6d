"""Checkpoint conversion between HF PyTorch safetensors and Paddle, for every generated model.

Library entry points (the CLI in ``cli.py`` wraps them)::

    convert_hf_to_paddle(src, dst, model=None)   # HF dir -> Paddle dir (from_pretrained-loadable)
    convert_paddle_to_hf(src, dst, model=None)   # and back, bit-exact
    split_tensor_parallel(src, dst, tp, model=None)  # full Paddle dir -> per-rank tpXX files

Each takes ``force=False``: what an existing ``dst`` keeps is ``destination.py``'s (never ``src``, never a file
the conversion did not write).
"""

from modbuild.weights.convert import convert_hf_to_paddle, convert_paddle_to_hf, resolve_model
from modbuild.weights.hf import WeightsError, normalise_hf_config
from modbuild.weights.split import split_tensor_parallel

__all__ = [
    "WeightsError",
    "convert_hf_to_paddle",
    "convert_paddle_to_hf",
    "normalise_hf_config",
    "resolve_model",
    "split_tensor_parallel",
]
