"""Tensor-parallel equality check: a generated model at TP=2 against the same weights in one process.

Run one check (2 processes; the worker cannot be launched with ``-m``, because paddle's launcher runs only script
paths, so pass this file's path)::

    python -m paddle.distributed.launch --nproc_per_node 2 --log_dir /tmp/tp_logs \\
        modbuild/dist/tp_check.py --model qwen2 --out result.json [--sequence-parallel] [--tied]

or several in one launch (imports dominate the ~13 s a launch costs)::

    ... modbuild/dist/tp_check.py --cases llama,qwen2:tied,qwen2:sp --out results.json

or from Python, ``run_tp2("qwen2")`` / ``run_tp2_cases(["llama", "qwen2:sp"])``, which launch, wait and return the
JSON. Each rank installs the gloo shim (a no-op on CUDA builds, so the same code runs over NCCL), calls
``fleet.init`` with ``mp_degree=2`` and, per case:

1. builds the single-process reference (``tensor_parallel_degree=1``) from a fixed seed and re-randomises every
   parameter (std 0.2, identical on all ranks: numpy RNG);
2. splits its full state dict for this rank with the model's ``_get_tensor_parallel_mappings(config, is_split=True)``
   (through paddlenlp's ``get_tensor_parallel_convert_actions``, which resolves the ``llama.`` prefix) and loads it
   into the TP model, checking every parameter's shape;
3. runs both on a fixed left-padded batch, gathers logits if they come out vocab-sharded, and computes the loss
   with the model's plain ``compute_loss`` (``F.cross_entropy``; ``ParallelCrossEntropy`` has no CPU kernel), so
   labels are never passed into ``forward``;
4. backpropagates, all-reduces sequence-parallel parameters' grads (paddle's own
   ``register_sequence_parallel_allreduce_hooks``), all-gathers every split grad along its split axis, and compares
   with the reference grads (max |diff| / max |ref| per parameter).

Before the cases, every launch also checks the five patched collectives' forward and backward against numpy
(``collectives_selftest``; this covers ``_c_split``, which the models never call).

Rank 0 writes ``{model, tied, sequence_parallel, logits_max_abs, loss_abs, grad_max_rel, worst_param, passed,
collectives_max_abs, ...}``; with ``--cases``, ``{"passed", "gloo_shim", "collectives", "collectives_max_abs",
"cases": [...]}``. A sequence-parallel case that shares a launch with the same model without SP also reports
``sp_off_logits_max_abs`` / ``sp_off_grad_max_rel`` (SP on vs off, both at TP=2). ``passed`` applies the
thresholds of DESIGN.md §6: logits ≤ 1e-5 abs, loss ≤ 1e-5 abs, gradients ≤ 1e-4 relative.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

LOGITS_TOL = 1e-5  # DESIGN.md §6: TP=2 vs TP=1, max |Δlogits|
LOSS_TOL = 1e-5
GRAD_RTOL = 1e-4  # DESIGN.md §6: relative gradients
TP_DEGREE = 2
SEED = 1234
PARAM_STD = 0.2


@dataclass(frozen=True)
class Case:
    model: str
    tied: bool = False
    sequence_parallel: bool = False

    @classmethod
    def parse(cls, spec: str) -> Case:
        """``"qwen2"``, ``"qwen2:tied"``, ``"llama:sp"``, ``"llama:tied:sp"``."""
        model, *flags = spec.strip().split(":")
        unknown = set(flags) - {"tied", "sp"}
        if unknown or not model:
            raise ValueError(f"bad case spec {spec!r}: expected model[:tied][:sp]")
        return cls(model, tied="tied" in flags, sequence_parallel="sp" in flags)

    @property
    def spec(self) -> str:
        return ":".join([self.model] + ["tied"] * self.tied + ["sp"] * self.sequence_parallel)


# ------------------------------------------------------------------------------------------------ worker


def _model_class(model: str):
    module = importlib.import_module(f"generated.{model}.modeling_{model}")
    classes = [getattr(module, n) for n in getattr(module, "__all__", dir(module)) if n.endswith("ForCausalLM")]
    if len(classes) != 1:
        raise LookupError(f"expected one *ForCausalLM class in {module.__name__}, found {len(classes)}")
    return classes[0]


def _batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two rows of 8 tokens, the first left-padded by 3; labels are -100 on padding."""
    from modbuild.verify.specs import TINY  # imported late: run by file path, the repo joins sys.path in main

    rng = np.random.default_rng(0)
    ids = rng.integers(1, TINY["vocab_size"], size=(2, 8)).astype("int64")
    mask = np.ones_like(ids)
    mask[0, :3] = 0
    ids[0, :3] = 0
    return ids, mask, np.where(mask == 1, ids, -100)


def _randomise(model, seed: int, norm_mean: float = 1.0) -> None:
    """Every parameter ~ N(0, 0.2), norm weights around `norm_mean` (1; 0 for Gemma's 1 + w norm), from numpy
    so all ranks agree bit for bit."""
    import paddle

    rng = np.random.default_rng(seed)
    for name, param in model.named_parameters():
        mean = norm_mean if "norm" in name else 0.0
        param.set_value(paddle.to_tensor(rng.normal(mean, PARAM_STD, param.shape).astype("float32")))


def _causal_lm_loss(model, logits, labels):
    if hasattr(model, "compute_loss"):
        return model.compute_loss(logits, labels)
    import paddle.nn.functional as F

    shift_logits = logits[:, :-1].astype("float32").reshape([-1, logits.shape[-1]])
    return F.cross_entropy(shift_logits, labels[:, 1:].reshape([-1]), ignore_index=-100)


def _forward_backward(model, group, vocab_size: int):
    import paddle
    from paddle.distributed.fleet.layers.mpu import mp_ops

    ids, mask, labels = _batch()
    model.clear_gradients()
    logits = model(paddle.to_tensor(ids), attention_mask=paddle.to_tensor(mask), return_dict=True).logits
    if group is not None and logits.shape[-1] != vocab_size:
        # Vocab-parallel logits: gather them (differentiably) rather than hit ParallelCrossEntropy.
        logits = mp_ops._c_concat(logits, group=group)
    loss = _causal_lm_loss(model, logits, paddle.to_tensor(labels))
    loss.backward()
    return logits.numpy(), float(loss.item())


def _split_axis(local_shape: list[int], full_shape: list[int]) -> int | None:
    diff = [i for i, (a, b) in enumerate(zip(local_shape, full_shape)) if a != b]
    if not diff:
        return None
    if len(diff) != 1 or local_shape[diff[0]] * TP_DEGREE != full_shape[diff[0]]:
        raise AssertionError(f"TP shape {local_shape} is not a {TP_DEGREE}-way split of {full_shape}")
    return diff[0]


def _gather(tensor, group, axis: int) -> np.ndarray:
    from paddle import distributed as dist

    parts = []
    dist.all_gather(parts, tensor, group=group)
    return np.concatenate([p.numpy() for p in parts], axis=axis)


def _max_rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / max(float(np.abs(ref).max()), 1e-12))


def _load_split(model, full_state: dict[str, np.ndarray], actions: dict) -> int:
    """Load this rank's split of the full checkpoint; every split must match the TP layer it feeds."""
    import paddle

    local_state = model.state_dict()
    if set(local_state) != set(full_state):
        raise AssertionError(f"TP/reference state dicts differ: {sorted(set(local_state) ^ set(full_state))}")
    split = 0
    for name, tensor in local_state.items():
        value = actions[name](full_state[name]) if name in actions else full_state[name]
        if list(value.shape) != list(tensor.shape):
            raise AssertionError(f"{name}: split checkpoint shape {list(value.shape)} != TP param {tensor.shape}")
        expect_split = _split_axis(list(tensor.shape), list(full_state[name].shape)) is not None
        if expect_split != (name in actions):
            raise AssertionError(f"{name}: TP layer split={expect_split} but the TP mappings say {name in actions}")
        tensor.set_value(paddle.to_tensor(value))
        split += expect_split
    return split


def _gathered_grads(model, reference, group) -> tuple[dict[str, np.ndarray], str | None, float]:
    """This rank's gradients gathered to full shape, and the worst relative error against the reference."""
    ref_params = dict(reference.named_parameters())
    grads, worst, grad_max_rel = {}, None, 0.0
    for name, param in model.named_parameters():
        if param.grad is None and ref_params[name].grad is None:
            continue  # an expert no token was routed to, in both runs
        if param.grad is None or ref_params[name].grad is None:
            raise AssertionError(f"{name}: a gradient in only one of the TP and single-process models")
        ref_grad = ref_params[name].grad.numpy()
        axis = _split_axis(list(param.shape), list(ref_grad.shape))
        grads[name] = grad = param.grad.numpy() if axis is None else _gather(param.grad, group, axis)
        rel = _max_rel(grad, ref_grad)
        if worst is None or rel > grad_max_rel:
            worst, grad_max_rel = name, rel
    return grads, worst, grad_max_rel


def _run_case(case: Case, hcg) -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    import paddle
    from paddle.distributed.fleet.utils.sequence_parallel_utils import register_sequence_parallel_allreduce_hooks

    from modbuild.verify.specs import TINY, spec

    group = hcg.get_model_parallel_group()
    model_cls = _model_class(case.model)
    config_cls = model_cls.config_class
    # The same tiny per-model config as the other verify checks (MoE sizes, head_dim, windows).
    kwargs = {**TINY, **spec(case.model).config, "tie_word_embeddings": case.tied}

    paddle.seed(SEED)
    reference = model_cls(config_cls(**kwargs))
    _randomise(reference, SEED, spec(case.model).norm_mean)
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
    split = _load_split(model, full_state, actions)
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
        "logits_max_abs": float(np.abs(tp_logits - ref_logits).max()),
        "logits_scale": float(np.abs(ref_logits).max()),
        "loss": tp_loss,
        "loss_abs": abs(tp_loss - ref_loss),
        "grad_max_rel": grad_max_rel,
        "worst_param": worst,
        "split_params": split,
        "params": len(full_state),
    }
    result["passed"] = (
        result["logits_max_abs"] <= LOGITS_TOL and result["loss_abs"] <= LOSS_TOL and grad_max_rel <= GRAD_RTOL
    )
    return result, tp_logits, grads


def _init_fleet():
    import paddle
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
    import paddle
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


def worker(cases: list[Case]) -> dict:
    """Each rank's part: collectives self-test, every case, SP on/off cross-comparison. Same result on all ranks."""
    from modbuild.dist import gloo_shim

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
            result["sp_off_logits_max_abs"] = float(np.abs(logits - off_logits).max())
            result["sp_off_grad_max_rel"] = max(_max_rel(grads[n], off_grads[n]) for n in grads)
    return {
        "passed": all(r["passed"] for r in results),
        "gloo_shim": shim,
        "collectives": collectives,
        "collectives_max_abs": max(collectives.values()),
        "cases": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="one model, e.g. qwen2")
    which.add_argument("--cases", help="comma-separated model[:tied][:sp] specs, checked in one launch")
    parser.add_argument("--sequence-parallel", action="store_true", help="with --model")
    parser.add_argument("--tied", action="store_true", help="with --model: tie_word_embeddings=True")
    parser.add_argument("--out", required=True, help="JSON written by rank 0")
    args = parser.parse_args(argv)
    if args.model:
        cases = [Case(args.model, tied=args.tied, sequence_parallel=args.sequence_parallel)]
    else:
        cases = [Case.parse(spec) for spec in args.cases.split(",") if spec.strip()]

    from paddle import distributed as dist

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
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(args.out)
    return 0


# ------------------------------------------------------------------------------------------------ launcher


class TPCheckError(RuntimeError):
    """A TP launch failed or timed out; the message ends with the tail of each worker's log."""


def _compiled_with_cuda() -> bool:
    import paddle

    return paddle.is_compiled_with_cuda()


def _launch_env(extra_env: Mapping[str, str] | None) -> dict[str, str]:
    # Inherited PADDLE_* / FLAGS_selected_* (e.g. when called from inside another launch) would confuse the launcher.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PADDLE_", "FLAGS_selected_"))}
    if not _compiled_with_cuda():
        # A CPU build runs over gloo. The launcher treats *any* CUDA_VISIBLE_DEVICES, even "", as a GPU job and
        # dies with an IndexError selecting devices, so it is removed rather than set to "".
        env.pop("CUDA_VISIBLE_DEVICES", None)
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        OMP_NUM_THREADS="1",  # two ranks on a 2-core machine
        GLOG_v="0",
        FLAGS_call_stack_level="2",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    return env


def _log_tails(log_dir: Path, lines: int = 40) -> str:
    chunks = []
    for log in sorted(log_dir.glob("*log*")):
        if log.is_file():
            text = log.read_text(errors="replace").splitlines()
            chunks.append(f"--- {log.name} (last {lines} lines) ---\n" + "\n".join(text[-lines:]))
    return "\n".join(chunks) or f"(no logs in {log_dir})"


def _child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc; empty elsewhere)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _stop_launch(proc: subprocess.Popen) -> None:
    """Stop the launcher and its workers, which the launcher starts in sessions of their own."""
    workers = _child_pids(proc.pid)
    proc.send_signal(signal.SIGTERM)  # the launcher's handler terminates its workers
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for pid in [proc.pid, *workers]:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def _one_launch_at_a_time() -> Iterator[None]:
    """Two launches at once (`doit -n 2 verify`) race for the rendezvous and gloo ports; a worker was seen
    aborting with SIGABRT. One launch keeps both cores busy anyway, so launches take turns."""
    with open(Path(tempfile.gettempdir()) / "modbuild-tp-launch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _launch(worker_args: list[str], timeout: float, extra_env: Mapping[str, str] | None) -> dict:
    log_dir = Path(tempfile.mkdtemp(prefix="tp_check_"))
    out = log_dir / "result.json"
    cmd = [
        sys.executable,
        "-m",
        "paddle.distributed.launch",
        "--nproc_per_node",
        str(TP_DEGREE),
        "--log_dir",
        str(log_dir),
        str(Path(__file__).resolve()),
        *worker_args,
        "--out",
        str(out),
    ]
    with _one_launch_at_a_time():
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_launch_env(extra_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, killed as a whole on timeout
        )
        try:
            launcher_output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_launch(proc)
            launcher_output, _ = proc.communicate()
            raise TPCheckError(
                f"TP check timed out after {timeout:.0f} s: {' '.join(cmd)}\n{_log_tails(log_dir)}"
            ) from None
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join(launcher_output.splitlines()[-20:])
        raise TPCheckError(
            f"TP check failed (exit {proc.returncode}): {' '.join(cmd)}\n--- launcher ---\n{tail}\n"
            f"{_log_tails(log_dir)}"
        )
    result = json.loads(out.read_text())
    shutil.rmtree(log_dir, ignore_errors=True)
    return result


def run_tp2(
    model: str,
    sequence_parallel: bool = False,
    timeout: float = 300,
    tied: bool = False,
    extra_env: Mapping[str, str] | None = None,
) -> dict:
    """Launch one 2-process TP check of ``generated.<model>`` and return rank 0's result dict.

    Raises ``TPCheckError`` (with the workers' log tails) if the launch fails or exceeds ``timeout`` seconds.
    Thresholds are not asserted here; read ``result["passed"]`` or the individual numbers.
    """
    args = ["--model", model] + ["--sequence-parallel"] * sequence_parallel + ["--tied"] * tied
    return _launch(args, timeout, extra_env)


def run_tp2_cases(
    cases: Iterable[str | Case], timeout: float = 300, extra_env: Mapping[str, str] | None = None
) -> dict:
    """Several cases (``"qwen2"``, ``"llama:tied"``, ``"qwen2:sp"``, ...) in a single 2-process launch.

    Returns ``{"passed", "gloo_shim", "collectives", "collectives_max_abs", "cases": [one dict per case]}``.
    """
    specs = [c.spec if isinstance(c, Case) else Case.parse(c).spec for c in cases]
    if len(set(specs)) != len(specs):
        raise ValueError(f"duplicate cases in {specs}")
    return _launch(["--cases", ",".join(specs)], timeout, extra_env)


if __name__ == "__main__":
    if str(ROOT) not in sys.path:  # run by file path from paddle's launcher
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
