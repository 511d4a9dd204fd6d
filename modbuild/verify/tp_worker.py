"""One rank of the tensor-parallel check: a generated model at TP=2 against the same weights in one process.

``modbuild.verify.tp_run.run_tp2`` / ``run_tp2_cases`` start two of these under ``paddle.distributed.launch``
(which runs script paths only, hence a file rather than ``-m``); in `doit verify`, one launch per run serves every
model (``--pool-dir``: the pool of ``modbuild/tp/pool.py``). By hand::

    python -m paddle.distributed.launch --nproc_per_node 2 --log_dir /tmp/tp_logs \\
        modbuild/verify/tp_worker.py --model qwen2 --out result.json [--sequence-parallel] [--tied]
    ... modbuild/verify/tp_worker.py --cases llama,qwen2:tied,qwen2:sp --out results.json

Each rank installs the gloo shim (a no-op on CUDA builds, so the same code runs over NCCL), calls ``fleet.init``
with ``mp_degree=2`` and, per case:

1. builds the single-process reference (``tensor_parallel_degree=1``) and re-draws every parameter with
   ``modbuild.verify.paddle_run.randomize``, the same weights the other verify checks use (numpy's RNG, so every
   rank draws the same values whatever paddle's RNG state);
2. splits its full state dict for this rank with the model's ``_get_tensor_parallel_mappings(config, is_split=True)``
   (through paddlenlp's ``get_tensor_parallel_convert_actions``, which resolves the ``llama.`` prefix) and loads it
   into the TP model, checking every parameter's shape;
3. runs both on ``specs.left_padded_batch``, gathers logits if they come out vocab-sharded, and computes the loss
   with the model's plain ``compute_loss`` (``F.cross_entropy``; ``ParallelCrossEntropy`` has no CPU kernel), so
   labels are never passed into ``forward``;
4. backpropagates, all-reduces sequence-parallel parameters' grads (paddle's own
   ``register_sequence_parallel_allreduce_hooks``), all-gathers every split grad along its split axis, and compares
   with the reference grads (``paddle_run.grad_rel``: max |diff| / max |ref| per parameter).

Before the cases, every launch also checks the five patched collectives' forward and backward against numpy
(``collectives_selftest``; this covers ``_c_split``, which the models never call).

Rank 0 writes ``{model, case, tied, sequence_parallel, logits_max_abs, loss_abs, grad_max_rel, worst_param,
gloo_shim, collectives_max_abs, ...}``; with ``--cases``, ``{"gloo_shim", "collectives", "collectives_max_abs",
"cases": [...]}``. A sequence-parallel case that shares a launch with the same model without SP also reports
``sp_off_logits_max_abs`` / ``sp_off_grad_max_rel`` (SP on vs off, both at TP=2). Only measurements: the bounds
and the verdict belong to the ``tp2`` record (``modbuild/verify/tp_check.py``).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":
    # Run by path, sys.path[0] is this directory (modbuild/verify). The launcher's PYTHONPATH says where the models
    # and this checkout are; it comes before any installed copy.
    sys.path.pop(0)
    if "--pool-dir" in sys.argv:  # a pool rank: gone with the run that owns it, even while still importing paddle
        from modbuild.tp.pool import watch_from_argv

        watch_from_argv(sys.argv)

import numpy as np
import paddle
from paddle import distributed as dist

from modbuild.atomic import atomic_write
from modbuild.tp import gloo_shim
from modbuild.tp.split import TP_DEGREE, load_split, split_axis
from modbuild.verify.paddle_run import grad_rel, max_abs, max_rel, randomize
from modbuild.verify.specs import TINY, left_padded_batch, spec
from modbuild.verify.tp_run import Case

SEED = 1234  # paddle's RNG while the models are built (the TP layers' model_parallel_rng too)


def _model_class(model: str):
    module = importlib.import_module(f"generated.{model}.modeling_{model}")
    return getattr(module, spec(model).head_class)


def _loss(model, logits, labels):
    if hasattr(model, "compute_loss"):
        return model.compute_loss(logits, labels)
    import paddle.nn.functional as F

    shift_logits = logits[:, :-1].astype("float32").reshape([-1, logits.shape[-1]])
    return F.cross_entropy(shift_logits, labels[:, 1:].reshape([-1]), ignore_index=-100)


def _forward_backward(model, group, vocab_size: int):
    from paddle.distributed.fleet.layers.mpu import mp_ops

    batch = left_padded_batch(vocab_size)
    model.clear_gradients()
    logits = model(
        paddle.to_tensor(batch["input_ids"]),
        attention_mask=paddle.to_tensor(batch["attention_mask"]),
        return_dict=True,
    ).logits
    if group is not None and logits.shape[-1] != vocab_size:
        # Vocab-parallel logits: gather them (differentiably) rather than hit ParallelCrossEntropy.
        logits = mp_ops._c_concat(logits, group=group)
    loss = _loss(model, logits, paddle.to_tensor(batch["labels"]))
    loss.backward()
    return logits.numpy(), float(loss.item())


def _gather(tensor, group, axis: int, merge=None) -> np.ndarray:
    """The full tensor from every rank's part: by the model's TP merge action where it has one (a fused
    projection's parts are split each on its own, so the parts do not simply concatenate), else concatenated."""
    parts = []
    dist.all_gather(parts, tensor, group=group)
    if merge is not None:
        return merge([p.numpy() for p in parts])
    return np.concatenate([p.numpy() for p in parts], axis=axis)


def _merge_actions(model) -> dict:
    return type(model).get_tensor_parallel_convert_actions(
        model.config, [n for n, _ in model.named_parameters()], is_split=False
    )


def _gathered_grads(model, reference, group) -> tuple[dict[str, np.ndarray], str | None, float]:
    """This rank's gradients gathered to full shape, and the worst relative error against the reference."""
    ref_params = dict(reference.named_parameters())
    largest = max((float(np.abs(p.grad.numpy()).max()) for p in ref_params.values() if p.grad is not None), default=0)
    grads, worst, grad_max_rel, merges = {}, None, 0.0, _merge_actions(model)
    for name, param in model.named_parameters():
        if param.grad is None and ref_params[name].grad is None:
            continue  # an expert no token was routed to, in both runs
        if param.grad is None or ref_params[name].grad is None:
            raise AssertionError(f"{name}: a gradient in only one of the TP and single-process models")
        ref_grad = ref_params[name].grad.numpy()
        axis = split_axis(list(param.shape), list(ref_grad.shape))
        grads[name] = grad = param.grad.numpy() if axis is None else _gather(param.grad, group, axis, merges.get(name))
        rel, _ = grad_rel(grad, ref_grad, largest)
        if worst is None or rel > grad_max_rel:
            worst, grad_max_rel = name, rel
    return grads, worst, grad_max_rel


def _run_case(case: Case, hcg) -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    from paddle.distributed.fleet.utils.sequence_parallel_utils import register_sequence_parallel_allreduce_hooks

    group = hcg.get_model_parallel_group()
    model_cls = _model_class(case.model)
    config_cls = model_cls.config_class
    # The same tiny per-model config as the other verify checks (MoE sizes, head_dim, windows).
    kwargs = {**TINY, **spec(case.model).config, "tie_word_embeddings": case.tied}

    paddle.seed(SEED)
    reference = model_cls(config_cls(**kwargs))
    randomize(reference, norm_mean=spec(case.model).norm_mean)
    reference.eval()
    full_state = {name: tensor.numpy() for name, tensor in reference.state_dict().items()}

    tp_config = config_cls(
        **kwargs,
        tensor_parallel_degree=TP_DEGREE,
        tensor_parallel_rank=hcg.get_model_parallel_rank(),
        sequence_parallel=case.sequence_parallel,
    )
    model = model_cls(tp_config)
    model.eval()
    actions = model_cls.get_tensor_parallel_convert_actions(tp_config, list(full_state), is_split=True)
    split = load_split(model, full_state, actions)
    if case.sequence_parallel:
        register_sequence_parallel_allreduce_hooks(model, accumulation_steps=1, fuse_sequence_parallel_allreduce=False)

    ref_logits, ref_loss = _forward_backward(reference, None, TINY["vocab_size"])
    tp_logits, tp_loss = _forward_backward(model, group, TINY["vocab_size"])
    grads, worst, grad_max_rel = _gathered_grads(model, reference, group)
    result = {
        "model": case.model,
        "case": case.spec,
        "tied": case.tied,
        "sequence_parallel": case.sequence_parallel,
        "logits_max_abs": max_abs(tp_logits, ref_logits),
        "logits_scale": float(np.abs(ref_logits).max()),
        "loss": tp_loss,
        "loss_abs": abs(tp_loss - ref_loss),
        "grad_max_rel": grad_max_rel,
        "worst_param": worst,
        "split_params": split,
        "params": len(full_state),
    }
    return result, tp_logits, grads


@functools.cache  # once per process: the `both` mode runs the check and the train mode in one launch
def _init_fleet():
    from paddle.distributed import fleet
    from paddle.distributed.fleet.meta_parallel import get_rng_state_tracker

    strategy = fleet.DistributedStrategy()
    strategy.hybrid_configs = {"dp_degree": 1, "mp_degree": TP_DEGREE, "pp_degree": 1, "sharding_degree": 1}
    fleet.init(is_collective=True, strategy=strategy)
    hcg = fleet.get_hybrid_communicate_group()
    if hcg.get_model_parallel_world_size() != TP_DEGREE:
        raise RuntimeError(f"expected {TP_DEGREE} model-parallel ranks, got {hcg.get_model_parallel_world_size()}")
    tracker = get_rng_state_tracker()
    if "model_parallel_rng" not in tracker.states_:
        tracker.add("model_parallel_rng", SEED + 1 + hcg.get_model_parallel_rank())
    paddle.seed(SEED)
    return hcg


def collectives_selftest(group) -> dict[str, float]:
    """Max abs error of each mp collective's forward and backward against numpy, on rank-dependent inputs.

    Covers ``_c_split``, which the models do not use, and runs whatever is installed (the shim on CPU, fleet's own
    ops on GPU).
    """
    from paddle.distributed.fleet.layers.mpu import mp_ops
    from paddle.distributed.fleet.utils import sequence_parallel_utils as sp_utils

    nranks, rank = group.nranks, group.rank
    shard = 2  # per-rank width of the last axis
    own = slice(rank * shard, (rank + 1) * shard)
    xs = [np.random.default_rng(10 + r).normal(size=(4, 3, shard * nranks)).astype("float32") for r in range(nranks)]
    ws = [np.random.default_rng(20 + r).normal(size=(4, 3, shard * nranks)).astype("float32") for r in range(nranks)]
    shards = [w[..., :shard] for w in ws]

    def run(op, x, w):
        x = paddle.to_tensor(x, stop_gradient=False)
        y = op(x)
        (y * paddle.to_tensor(w)).sum().backward()
        return y.numpy(), x.grad.numpy()

    def err(got, want):
        return max(float(np.abs(g - w).max()) for g, w in zip(got, want))

    out = {}
    out["_c_identity"] = err(
        run(lambda t: mp_ops._c_identity(t, group=group), xs[rank], ws[rank]), (xs[rank], sum(ws))
    )
    out["_mp_allreduce"] = err(
        run(lambda t: mp_ops._mp_allreduce(t, group=group), xs[rank], ws[rank]), (sum(xs), ws[rank])
    )
    out["_c_concat"] = err(
        run(lambda t: mp_ops._c_concat(t, group=group), xs[rank][..., :shard], ws[0]),
        (np.concatenate([x[..., :shard] for x in xs], axis=-1), ws[0][..., own]),
    )
    out["_c_split"] = err(
        run(lambda t: mp_ops._c_split(t, group=group), xs[0], shards[rank]),
        (xs[0][..., own], np.concatenate(shards, axis=-1)),
    )
    rows = xs[0].shape[0] // nranks
    got = sp_utils.reduce_scatter(paddle.to_tensor(xs[rank])).numpy()
    out["reduce_scatter"] = float(np.abs(got - sum(xs)[rank * rows : (rank + 1) * rows]).max())
    return out


def _tp_loss(group, vocab_size: int):
    """The loss the train mode optimises, the same at TP=1 and TP=2: logits (gathered when vocab-sharded), the
    model's plain ``compute_loss`` and, on an MoE model, ``router_aux_loss_coef`` x the aux loss."""
    from paddle.distributed.fleet.layers.mpu import mp_ops

    def loss_fn(model, ids):
        out = model(paddle.to_tensor(ids), return_dict=True)
        logits = out.logits
        if group is not None and logits.shape[-1] != vocab_size:
            logits = mp_ops._c_concat(logits, group=group)
        loss = model.compute_loss(logits, paddle.to_tensor(ids))
        if getattr(out, "aux_loss", None) is not None:
            loss = loss + model.config.router_aux_loss_coef * out.aux_loss
        return loss

    return loss_fn


def _full_params(model, reference_shapes: dict[str, list[int]], group) -> dict[str, np.ndarray]:
    out, merges = {}, _merge_actions(model)
    for name, param in model.named_parameters():
        axis = split_axis(list(param.shape), reference_shapes[name])
        out[name] = param.numpy() if axis is None else _gather(param, group, axis, merges.get(name))
    return out


def _global_norm(reference_shapes: dict[str, list[int]], group):
    """The global gradient norm of the full (unsplit) model, in float64: split parameters' squared norms summed
    over the model-parallel group (one all-reduce), replicated ones counted once."""

    def norm(model) -> float:
        split = replicated = 0.0
        for name, param in model.named_parameters():
            if param.grad is None:
                continue
            square = float(np.square(param.grad.numpy().astype("float64")).sum())
            if split_axis(list(param.shape), reference_shapes[name]) is None:
                replicated += square
            else:
                split += square
        total = paddle.to_tensor([split], dtype="float64")
        dist.all_reduce(total, group=group)
        return float(np.sqrt(float(total.numpy()[0]) + replicated))

    return norm


@dataclass
class _Training:
    """What every train-mode run of one model shares: the classes, the config, the data, the full weights."""

    model_cls: type
    kwargs: dict
    cfg: object
    data: list
    full_state: dict
    shapes: dict
    hcg: object
    reference: object  # the single-process model holding `full_state`


def _training(model_name: str) -> _Training:
    from modbuild.verify.train_check import train_config_overrides
    from modbuild.verify.train_loop import TrainConfig, batches

    hcg = _init_fleet()
    cfg = TrainConfig()
    model_cls = _model_class(model_name)
    kwargs = {**TINY, **spec(model_name).config, **train_config_overrides(model_name)}
    paddle.seed(SEED)
    reference = model_cls(model_cls.config_class(**kwargs))
    randomize(reference, norm_mean=spec(model_name).norm_mean)
    full_state = {name: tensor.numpy() for name, tensor in reference.state_dict().items()}
    shapes = {name: list(p.shape) for name, p in reference.named_parameters()}
    data = batches(cfg, TINY["vocab_size"])
    return _Training(model_cls, kwargs, cfg, data, full_state, shapes, hcg, reference)


def _train_tp_case(t: _Training, sp: bool, ref_run) -> dict:
    """20 steps at TP=2 (`sp`: with sequence parallelism), compared with `ref_run` (TP=1) where there is one."""
    from paddle.distributed import fleet
    from paddle.distributed.fleet.utils.sequence_parallel_utils import register_sequence_parallel_allreduce_hooks

    from modbuild.verify.train_loop import masked_max_rel, train_paddle

    group = t.hcg.get_model_parallel_group()
    paddle.seed(SEED)
    tp_config = t.model_cls.config_class(
        **t.kwargs,
        tensor_parallel_degree=TP_DEGREE,
        tensor_parallel_rank=t.hcg.get_model_parallel_rank(),
        sequence_parallel=sp,
    )
    model = t.model_cls(tp_config)
    actions = t.model_cls.get_tensor_parallel_convert_actions(tp_config, list(t.full_state), is_split=True)
    split = load_split(model, t.full_state, actions)
    if sp:
        register_sequence_parallel_allreduce_hooks(
            model, accumulation_steps=t.cfg.accumulation, fuse_sequence_parallel_allreduce=False
        )
    loss_fn, norm_fn = _tp_loss(group, TINY["vocab_size"]), _global_norm(t.shapes, group)
    run = train_paddle(
        model, t.data, t.cfg, loss_fn=loss_fn, wrap_optimizer=fleet.distributed_optimizer, norm_fn=norm_fn
    )
    params = _full_params(model, t.shapes, group)  # collectives: on every rank
    worst, params_max_rel = None, 0.0
    for name, value in params.items() if ref_run is not None else ():
        diff = masked_max_rel(value, ref_run.params[name], ref_run.comparable(name))
        if worst is None or diff > params_max_rel:
            worst, params_max_rel = name, diff
    curves = run.curves()
    return {"sequence_parallel": sp, "curves": curves, "params_max_rel": params_max_rel, "worst_param": worst,
            "split_params": split, "seconds": run.seconds}  # fmt: skip


def train_worker(model_name: str, sequence_parallel: bool = True) -> dict:
    """The train mode: `train_loop.train_paddle`'s 20 steps at TP=1 and at TP=2 (and TP=2 with sequence
    parallelism), the same weights, data and optimizer; the TP optimizer is fleet's hybrid-parallel one, whose
    global-norm clip sums the squared norms of split parameters over the model-parallel group. Only rank 0
    reports, so only rank 0 trains the TP=1 reference (rank 1 waits for it in the TP run's first collective,
    which leaves its core to the other checks)."""
    from modbuild.verify.train_loop import train_paddle, untrained_count

    shim = gloo_shim.install()
    t = _training(model_name)
    ref_run = None
    if dist.get_rank() == 0:
        ref_run = train_paddle(t.reference, t.data, t.cfg, loss_fn=_tp_loss(None, TINY["vocab_size"]))
    moe = "output_router_logits" in t.kwargs
    # A model may refuse sequence parallelism, saying why (DeepSeek-V3's config: `sequence_parallel_unsupported`).
    no_sp = getattr(t.model_cls.config_class, "sequence_parallel_unsupported", "")
    modes = (False, True) if sequence_parallel and not moe and not no_sp else (False,)
    cases = [_train_tp_case(t, sp, ref_run) for sp in modes]
    result = {"model": model_name, "gloo_shim": shim, "cases": cases}
    if ref_run is not None:
        result["reference"], result["untrained"] = ref_run.curves(), untrained_count(ref_run)
    if moe:
        result["sp_skipped"] = (
            "under SP a rank's router logits cover only its slice of the tokens; the aux loss would need a gather"
        )
    elif no_sp:
        result["sp_skipped"] = no_sp
    return result


def worker(cases: list[Case]) -> dict:
    """Each rank's part: collectives self-test, every case, SP on/off cross-comparison. Same result on all ranks."""
    shim = gloo_shim.install()
    hcg = _init_fleet()
    collectives = collectives_selftest(hcg.get_model_parallel_group())
    results, outputs = [], {}
    for case in cases:
        result, logits, grads = _run_case(case, hcg)
        outputs[case] = (logits, grads)
        results.append(result)
    for result, case in zip(results, cases):
        off = Case(case.model, case.tied, sequence_parallel=False)
        if case.sequence_parallel and off in outputs:
            (logits, grads), (off_logits, off_grads) = outputs[case], outputs[off]
            result["sp_off_logits_max_abs"] = max_abs(logits, off_logits)
            result["sp_off_grad_max_rel"] = max(max_rel(grads[n], off_grads[n]) for n in grads)
    return {
        "gloo_shim": shim,
        "collectives": collectives,
        "collectives_max_abs": max(collectives.values()),
        "cases": results,
    }


def check(model: str) -> dict:
    """The tp2 check of `model`: its case's dict with the self-test's."""
    result = worker([Case(model)])
    return {
        **result["cases"][0],
        "gloo_shim": result["gloo_shim"],
        "collectives_max_abs": result["collectives_max_abs"],
    }


def both(model: str) -> dict:
    """Both TP checks of `model`: ``{"tp2": the check's dict with the self-test, "train-tp2": train mode's}``."""
    return {"tp2": check(model), "train-tp2": train_worker(model)}


def serve(folder: str, owner: str, idle: float) -> int:
    """The pool: fleet once, then every request of the run (`modbuild/tp/pool.py`). Each answer carries the key
    of the sources it was computed from: the check code as imported at start, the model's files as first imported."""
    from modbuild.tp import pool
    from modbuild.verify import tp_results, train_check, train_loop  # noqa: F401 - imported before the key is taken

    gloo_shim.install()
    _init_fleet()
    code = tp_results.code_digest()
    models: dict[str, str] = {}

    def handle(request: dict) -> tuple[dict, str]:
        model = request["model"]
        if model not in models:
            models[model] = tp_results.model_digest(model)
        modes = {"both": both, "tp2": check}
        if request.get("mode") not in modes:
            raise ValueError(f"unknown pool request mode {request.get('mode')!r} (one of {', '.join(modes)})")
        return modes[request["mode"]](model), tp_results.combine(code, models[model])

    pid, start = owner.split(":")
    return pool.serve(Path(folder), dist.get_rank(), (int(pid), int(start)), idle, handle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="one model, e.g. qwen2")
    which.add_argument("--cases", help="comma-separated model[:tied][:sp] specs, checked in one launch")
    # not --serve: paddle's launcher reads that as an abbreviation of its own --servers
    which.add_argument("--pool-dir", help="serve the requests of a TP pool directory (modbuild/tp/pool.py)")
    parser.add_argument("--owner", default="", help="with --pool-dir: PID:START of the run that owns the pool")
    parser.add_argument("--idle", type=float, default=120.0, help="with --pool-dir: stop after this many idle seconds")
    parser.add_argument("--sequence-parallel", action="store_true", help="with --model")
    parser.add_argument("--tied", action="store_true", help="with --model: tie_word_embeddings=True")
    parser.add_argument("--out", help="JSON written by rank 0 (required but with --pool-dir)")
    # not --train: paddle's launcher reads that as an abbreviation of its own --trainers
    parser.add_argument(
        "--worker-mode",
        choices=("check", "train", "both"),
        default="check",
        help="train: the train-tp2 check; both: the tp2 and train-tp2 checks of --model in one launch",
    )
    args = parser.parse_args(argv)
    if args.pool_dir:
        if not args.owner:
            parser.error("--pool-dir needs --owner")
        return serve(args.pool_dir, args.owner, args.idle)
    if not args.out:
        parser.error("--out is required")
    if args.worker_mode in ("train", "both"):
        if not args.model:
            parser.error(f"--worker-mode {args.worker_mode} needs --model")
        report = both(args.model) if args.worker_mode == "both" else train_worker(args.model)
        if dist.get_rank() == 0:
            atomic_write(Path(args.out), json.dumps(report, indent=1))
        dist.barrier()
        return 0
    if args.model:
        cases = [Case(args.model, tied=args.tied, sequence_parallel=args.sequence_parallel)]
    else:
        cases = [Case.parse(text) for text in args.cases.split(",") if text.strip()]

    report = worker(cases)
    if dist.get_rank() == 0:
        if args.model:  # the one case's dict, with the self-test alongside
            payload = {
                **report["cases"][0],
                "gloo_shim": report["gloo_shim"],
                "collectives_max_abs": report["collectives_max_abs"],
            }
        else:
            payload = report
        atomic_write(Path(args.out), json.dumps(payload, indent=2))
    dist.barrier()  # both ranks are done with every collective
    return 0


if __name__ == "__main__":
    status = main()
    # Skip interpreter teardown: paddle's gloo process group was seen aborting the process (SIGABRT) in its
    # destructors after the result was written, which failed a passing check.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
