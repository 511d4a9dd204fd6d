"""Model-agnostic code the generated models import (as HF keeps it in shared modules): RoPE init (``rope``),
attention functions (``attention``), masks and positions (``masks``), recompute (``recompute``), activations
(``activations``), the PaddleNLP base class with checkpoint names and loss (``pretrained``), tensor-parallel
layers (``parallel``) and MoE helpers (``moe``)."""
