"""The training loop of the `train` checks, written once per framework and parameterised by `TrainConfig`.

Both loops do the same thing, each with its own framework's classes:

- AdamW (betas, eps, weight decay), decoupled decay on every parameter except biases and norm weights (HF Trainer's
  `get_decay_parameter_names` on the torch side, PaddleNLP Trainer's ``apply_decay_param_fun`` rule on ours);
- linear warm-up then cosine decay (`transformers.get_cosine_schedule_with_warmup` against
  `paddle.optimizer.lr.LinearWarmup` around `CosineAnnealingDecay`);
- global-norm clipping (`torch.nn.utils.clip_grad_norm_` against `paddle.nn.ClipGradByGlobalNorm`, which the
  hybrid-parallel optimizer replaces with its model-parallel-aware version under TP);
- gradient accumulation: each micro-batch's loss divided by the number of micro-batches before `backward`.

Each step records the mean micro-batch loss, the learning rate the update used, the global L2 norm of the
accumulated gradients before clipping (computed here, the same way on both sides, in float64) and the norm of the
gradients the optimizer applied (read back after its step: both frameworks clip in place).

The data is real text that ships with Python, the Zen of Python (the stdlib's ``this`` module), tokenised as
bytes: no tokenizer that works offline ships with an installed package here (tiktoken's and SmolLM2's are
downloads), and an ASCII byte is already an id below the tiny vocabulary of 128, so ``bytes % vocab`` maps nothing
onto anything else. Token 0 (Gemma's padding row in HF, which torch never updates) does not occur.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from modbuild.optim import paddle_adamw, warmup_cosine


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 20
    lr: float = 1e-3
    warmup: int = 4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip: float = 1.0
    accumulation: int = 2
    batch: int = 2  # rows per micro-batch
    length: int = 32  # tokens per row
    seed: int = 0
    # Mutation knobs, for the tests: each breaks one thing on one side.
    decay_norms: bool = False  # weight decay on norm weights too
    warmup_offset: int = 0  # the warm-up this many steps longer (negative: shorter)
    clip_on: bool = True
    accumulation_scale: float = 1.0  # the micro-batch loss multiplied by this as well as divided by `accumulation`

    def mutated(self, **knobs) -> TrainConfig:
        return replace(self, **knobs)


@dataclass
class Run:
    """What one training run measured, per step, and its final parameters (by the framework's own names)."""

    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    clipped_norm: list[float] = field(default_factory=list)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    decayed: set[str] = field(default_factory=set)
    # Per parameter, which elements' gradient was above rounding (`TRAINED`) at some step, and which was ever
    # nonzero. An element that only ever got rounding noise (GLM's key bias on the features RoPE passes through)
    # is not trained by the loss: Adam scales its noise up to full-size steps.
    live: dict[str, np.ndarray] = field(default_factory=dict)
    nonzero: dict[str, np.ndarray] = field(default_factory=dict)

    def comparable(self, name: str) -> np.ndarray | None:
        """The elements whose final values mean something: trained, or never touched (exactly zero gradient)."""
        if name not in self.live:
            return None
        return self.live[name] | ~self.nonzero[name]

    seconds: float = 0.0

    def curves(self) -> dict[str, list[float]]:
        return {"loss": self.loss, "lr": self.lr, "grad_norm": self.grad_norm, "clipped_norm": self.clipped_norm}


def text() -> str:
    import codecs
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # its first import prints the Zen
        import this
    return codecs.decode(this.s, "rot13")


def batches(cfg: TrainConfig, vocab: int) -> list[list[np.ndarray]]:
    """steps x accumulation micro-batches of [batch, length] ids: consecutive windows of the text, cycled."""
    data = np.frombuffer(text().encode("utf-8"), dtype=np.uint8).astype("int64") % vocab
    if (data == 0).any():
        raise ValueError("token 0 in the training text: HF never updates a padding row")
    need = cfg.steps * cfg.accumulation * cfg.batch * cfg.length
    stream = np.resize(data, need)  # repeats the text as often as needed
    rows = stream.reshape(cfg.steps, cfg.accumulation, cfg.batch, cfg.length)
    return [[np.ascontiguousarray(micro) for micro in step] for step in rows]


# A gradient element below this fraction of the step's largest is zero up to float rounding (paddle_run.ZERO_GRAD).
TRAINED = 1e-6


def mark_trained(run: Run, grads: dict[str, np.ndarray]) -> None:
    """Record this step's gradients in ``run.live`` (above rounding) and ``run.nonzero``."""
    largest = max((float(np.abs(g).max()) for g in grads.values() if g.size), default=0.0)
    for name, grad in grads.items():
        live, nonzero = np.abs(grad) >= TRAINED * largest, grad != 0
        run.live[name] = run.live[name] | live if name in run.live else live
        run.nonzero[name] = run.nonzero[name] | nonzero if name in run.nonzero else nonzero


def masked_max_rel(value: np.ndarray, reference: np.ndarray, trained: np.ndarray | None) -> float:
    """max |diff| / max |reference| over the trained elements (all of them without a mask)."""
    scale = float(np.abs(reference).max())
    diff = np.abs(value - reference) if trained is None else np.abs(value - reference)[trained]
    worst = float(diff.max()) if diff.size else 0.0
    return worst / scale if scale else worst


def untrained_count(run: Run) -> int:
    """Elements left out of the parameter comparison: only rounding noise ever reached them."""
    return int(sum(int((~run.comparable(name)).sum()) for name in run.live))


def global_norm(grads) -> float:
    """sqrt(sum of squares) over numpy gradients, in float64."""
    return math.sqrt(sum(float(np.square(g.astype("float64")).sum()) for g in grads))


# --------------------------------------------------------------------------------------------------------- torch


def train_torch(net, data: list[list[np.ndarray]], cfg: TrainConfig) -> Run:

    import torch

    threads = torch.get_num_threads()
    # One thread: tiny matrices gain nothing from two, and with the other core busy (`doit -n 2`) torch's thread
    # pool spins: 20 s instead of 1 s for Llama's 20 steps here.
    torch.set_num_threads(1)
    try:
        return _train_torch(net, data, cfg)
    finally:
        torch.set_num_threads(threads)


def _train_torch(net, data: list[list[np.ndarray]], cfg: TrainConfig) -> Run:
    import time

    import torch
    import transformers

    torch.manual_seed(cfg.seed)
    net.train()
    decay = set(transformers.Trainer.get_decay_parameter_names(None, net))
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if n in decay], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    sched = transformers.get_cosine_schedule_with_warmup(opt, cfg.warmup, cfg.steps)
    params = [p for _, p in named]
    run = Run(decayed={n for n, _ in named if n in decay})
    start = time.perf_counter()
    for step in data:
        opt.zero_grad(set_to_none=True)
        losses = []
        for ids in step:
            ids = torch.tensor(ids)
            loss = net(input_ids=ids, labels=ids).loss
            losses.append(float(loss.item()))
            (loss / cfg.accumulation).backward()
        run.loss.append(float(np.mean(losses)))
        run.lr.append(float(sched.get_last_lr()[0]))
        run.grad_norm.append(global_norm([p.grad.numpy() for p in params if p.grad is not None]))
        mark_trained(run, {n: p.grad.numpy() for n, p in named if p.grad is not None})
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        opt.step()
        run.clipped_norm.append(global_norm([p.grad.numpy() for p in params if p.grad is not None]))
        sched.step()
    run.seconds = time.perf_counter() - start
    run.params = {n: p.detach().numpy().copy() for n, p in named}
    return run


# -------------------------------------------------------------------------------------------------------- paddle


def paddle_optimizer(model, cfg: TrainConfig):
    """AdamW with PaddleNLP Trainer's decay rule, LinearWarmup(CosineAnnealingDecay) and ClipGradByGlobalNorm."""

    sched = warmup_cosine(cfg.lr, cfg.warmup + cfg.warmup_offset, cfg.steps)
    opt, decayed = paddle_adamw(
        model,
        sched,
        beta1=cfg.betas[0],
        beta2=cfg.betas[1],
        epsilon=cfg.eps,
        weight_decay=cfg.weight_decay,
        clip=cfg.clip if cfg.clip_on else None,
        decay_norms=cfg.decay_norms,
    )
    return opt, sched, decayed


def paddle_loss(model, ids):
    """The model's own loss: next-token cross entropy (plus router_aux_loss_coef x the aux loss on an MoE model
    whose config sets output_router_logits)."""
    import paddle

    ids = paddle.to_tensor(ids)
    return model(input_ids=ids, labels=ids, return_dict=True).loss


def train_paddle(
    model,
    data: list[list[np.ndarray]],
    cfg: TrainConfig,
    loss_fn=paddle_loss,
    wrap_optimizer=None,
    norm_fn=None,
) -> Run:
    """`loss_fn(model, ids)`, `wrap_optimizer(opt)` (fleet's hybrid-parallel optimizer under TP) and
    `norm_fn(model) -> float` (the global gradient norm, summed over the TP group) default to the single-process
    ones."""
    import time

    import paddle

    paddle.seed(cfg.seed)
    model.train()
    opt, sched, decayed = paddle_optimizer(model, cfg)
    if wrap_optimizer is not None:
        opt = wrap_optimizer(opt)
    norm_fn = norm_fn or (lambda m: global_norm([p.grad.numpy() for p in m.parameters() if p.grad is not None]))
    run = Run(decayed=decayed)
    start = time.perf_counter()
    for step in data:
        losses = []
        for ids in step:
            loss = loss_fn(model, ids)
            losses.append(float(loss.item()))
            (loss * (cfg.accumulation_scale / cfg.accumulation)).backward()
        run.loss.append(float(np.mean(losses)))
        run.lr.append(float(opt.get_lr()))
        run.grad_norm.append(norm_fn(model))
        mark_trained(run, {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None})
        opt.step()
        run.clipped_norm.append(norm_fn(model))
        opt.clear_grad(set_to_zero=False)
        sched.step()
    run.seconds = time.perf_counter() - start
    run.params = {n: p.numpy().copy() for n, p in model.named_parameters()}
    return run


# ------------------------------------------------------------------------------------------------------ compare

STEP_BOUNDS = {"lr": 0.0, "loss": 1e-4, "grad_norm": 1e-4, "clipped_norm": 1e-4}
FIRST_LOSS_BOUND = 1e-5  # the loss at step 1, before any update
PARAMS_BOUND = 1e-3


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else abs(a - b)


def step_diffs(got: Run, ref: Run) -> list[dict[str, float]]:
    """Per step: |lr diff| (absolute), and relative loss / grad-norm / clipped-norm differences."""
    return [
        {
            "lr": abs(got.lr[i] - ref.lr[i]),
            "loss": rel(got.loss[i], ref.loss[i]),
            "grad_norm": rel(got.grad_norm[i], ref.grad_norm[i]),
            "clipped_norm": rel(got.clipped_norm[i], ref.clipped_norm[i]),
        }
        for i in range(min(len(got.loss), len(ref.loss)))
    ]


def step_bound(metric: str, step: int) -> float:
    return FIRST_LOSS_BOUND if metric == "loss" and step == 1 else STEP_BOUNDS[metric]


def first_over(diffs: list[dict[str, float]]) -> tuple[int, list[str]]:
    """The first step (1-based) where a metric exceeds its bound, and what exceeded there; (0, []) if none."""
    for i, row in enumerate(diffs, 1):
        over = [f"{k} {v:.2e} > {step_bound(k, i):g}" for k, v in row.items() if not v <= step_bound(k, i)]
        if over:
            return i, over
    return 0, []


def summarise(diffs: list[dict[str, float]]) -> dict[str, float]:
    return {
        "steps": float(len(diffs)),
        "loss_step1": diffs[0]["loss"] if diffs else float("inf"),
        "loss": max(d["loss"] for d in diffs),
        "lr": max(d["lr"] for d in diffs),
        "grad_norm": max(d["grad_norm"] for d in diffs),
        "clipped_norm": max(d["clipped_norm"] for d in diffs),
    }


BOUNDS = {
    "loss_step1": FIRST_LOSS_BOUND,
    "loss": STEP_BOUNDS["loss"],
    "lr": STEP_BOUNDS["lr"],
    "grad_norm": STEP_BOUNDS["grad_norm"],
    "clipped_norm": STEP_BOUNDS["clipped_norm"],
    "params": PARAMS_BOUND,
}
