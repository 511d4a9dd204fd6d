"""The seed's precision table at real sizes: generated Qwen2 against HF transformers at Qwen2-0.5B and
Qwen2-1.5B's real configs, random weights at the models' own init, fp32, with timings and peak memory.

    run_precision(root, ["0.5b", "1.5b"])  -> bool   # writes reports/precision.md and reports/precision.json

Modules: ``sizes`` (configs, the seed's bounds, the batch), ``run`` (the two processes and the verdict),
``hf_side`` / ``paddle_side`` (what each process does), ``worker`` (the process entry), ``report`` (markdown).
Nothing here imports a framework at import time.
"""

from __future__ import annotations

from modbuild.precision.run import Settings, run_precision
from modbuild.precision.sizes import DEFAULT_SIZES, SIZES

__all__ = ["DEFAULT_SIZES", "SIZES", "Settings", "run_precision"]
