"""The optimizer both the training engine and the `train` checks use: AdamW with PaddleNLP Trainer's weight-decay
rule, linear warm-up then cosine decay, global-norm clipping. One definition, so the engine trains with exactly
what `doit verify` aligned against HF (modbuild/verify/train_loop.py), and the engine does not import the
verification package."""

from __future__ import annotations


def paddle_decays(name: str, decay_norms: bool = False) -> bool:
    """PaddleNLP Trainer's rule: no decay when "bias" or "norm" is in the name (`decay_norms`: norms decay too)."""
    return "bias" not in name and (decay_norms or "norm" not in name)


def warmup_cosine(lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0):
    """Linear warm-up from 0 over `warmup_steps` (none when 0), then cosine from `lr` to `min_lr` over the rest."""
    import paddle

    cosine = paddle.optimizer.lr.CosineAnnealingDecay(lr, T_max=max(1, total_steps - warmup_steps), eta_min=min_lr)
    if not warmup_steps:
        return cosine
    return paddle.optimizer.lr.LinearWarmup(cosine, warmup_steps=warmup_steps, start_lr=0.0, end_lr=lr)


def paddle_adamw(
    model,
    learning_rate,
    *,
    beta1: float,
    beta2: float,
    epsilon: float,
    weight_decay: float,
    clip: float | None,
    decay_norms: bool = False,
):
    """AdamW over the trainable parameters with PaddleNLP Trainer's decay rule (`paddle_decays`) and, with `clip`,
    ClipGradByGlobalNorm; returns the optimizer and the names of the decayed parameters."""
    import paddle

    named = [(n, p) for n, p in model.named_parameters() if not p.stop_gradient]
    decay = {p.name for n, p in named if paddle_decays(n, decay_norms)}
    opt = paddle.optimizer.AdamW(
        learning_rate=learning_rate,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
        parameters=[p for _, p in named],
        weight_decay=weight_decay,
        apply_decay_param_fun=lambda name: name in decay,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(clip) if clip else None,
    )
    return opt, {n for n, p in named if p.name in decay}
