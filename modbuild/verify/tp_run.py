"""Run the TP checks' worker (``modbuild/verify/tp_worker.py``) in two ranks and return rank 0's measurements.

In `doit verify`, both TP checks of every model go to one pool of two ranks per run (``modbuild/tp/pool.py``):
`run_tp_checks(model)` is one request. From Python and in the tests, ``run_tp2("qwen2")`` (one case) or
``run_tp2_cases(["llama", "qwen2:tied", "qwen2:sp"])`` (several cases) is a launch of its own. The result holds
measured numbers only; whether they are good enough is decided by the ``tp2`` record (``tp_check.BOUNDS``) and the
``train-tp2`` record (``train_check``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from modbuild.tp.launch import TP_DEGREE, distributed_launch, log_tails

WORKER = Path(__file__).resolve().with_name("tp_worker.py")


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


class TPCheckError(RuntimeError):
    """A TP launch failed or timed out; the message ends with the tail of each worker's log."""


def _models_root() -> Path:
    import generated

    return Path(generated.__file__).resolve().parent.parent


PLAN_ENV = "MODBUILD_TP_PLAN"  # the models whose TP checks this doit run runs, in its order (modbuild/doit_run.py)


def pool_mode(model: str) -> str:
    """A causal LM's request is for both TP checks; a masked LM (BERT) has the tp2 check only."""
    from modbuild.verify.specs import spec

    return "both" if spec(model).causal else "tp2"


def _queued_id(model: str, mode: str) -> str:
    return f"queued-{model}-{mode}"


def _queue_plan(extra_env: Mapping[str, str] | None) -> list[str]:
    """Queue the TP requests of every model in this run's plan (once per run: `pool.enqueue`); the plan's models."""
    from modbuild.tp.pool import enqueue

    plan = [model for model in os.environ.get(PLAN_ENV, "").split(",") if model]
    if plan:
        requests = [{"model": m, "mode": pool_mode(m), "id": _queued_id(m, pool_mode(m))} for m in plan]
        enqueue(WORKER, requests, _models_root(), env=extra_env)
    return plan


def run_tp_checks(model: str, timeout: float = 600, extra_env: Mapping[str, str] | None = None) -> dict:
    """Both TP checks of ``generated.<model>`` as one request to this run's TP pool (started by the first):
    ``{"tp2": run_tp2's dict, "train-tp2": run_train_tp2's dict}``."""
    return pool_request(model, "both", timeout, extra_env)


def pool_request(
    model: str, mode: str = "both", timeout: float = 600, extra_env: Mapping[str, str] | None = None
) -> dict:
    """One request (`mode`: ``both``, or ``tp2`` for the check alone) to this run's TP pool. The answer is used
    only when it was computed from the sources this process sees (`tp_results.sources_key`); a pool holding
    other code or model files is stopped and the request goes to a new one.

    In a `doit` run, the first request also queues those of every model in the run's plan (`PLAN_ENV`), so that
    the pool works through them while the doit workers run the other checks; a model's request then takes the
    answer to its queued one."""
    from modbuild.tp.pool import PoolError, stop_tree, submit
    from modbuild.verify.profile import add_remote
    from modbuild.verify.tp_results import sources_key

    key = sources_key(model)
    try:
        queued = _queued_id(model, mode) if model in _queue_plan(extra_env) else None
    except PoolError as exc:  # the pool did not start
        raise TPCheckError(f"TP checks of {model} failed in the pool: {exc}") from None
    for _ in range(2):
        try:
            answer = submit(
                WORKER, {"model": model, "mode": mode}, _models_root(), timeout, env=extra_env, queued=queued
            )
        except PoolError as exc:
            raise TPCheckError(f"TP checks of {model} failed in the pool: {exc}") from None
        add_remote(answer["seconds"])
        if answer["key"] == key:
            return answer["result"]
        stale = _pool_launcher()
        if stale is not None:
            stop_tree(*stale)
    raise TPCheckError(
        f"{model}: the TP pool's sources differ from this tree's twice in a row (edited during the run?)"
    )


def _pool_launcher() -> tuple[int, int] | None:
    from modbuild.tp.pool import _running, owner_process, pool_dir

    return _running(pool_dir(owner_process(), _models_root()))


def _launch(worker_args: list[str], timeout: float, extra_env: Mapping[str, str] | None) -> dict:
    log_dir = Path(tempfile.mkdtemp(prefix="tp_check_"))
    out = log_dir / "result.json"
    launched = distributed_launch(WORKER, [*worker_args, "--out", str(out)], TP_DEGREE, log_dir, extra_env, timeout)
    cmd, returncode = launched.cmd, launched.returncode
    if returncode is None:
        raise TPCheckError(f"TP check timed out after {timeout:.0f} s: {' '.join(cmd)}\n{log_tails(log_dir)}")
    if returncode != 0 and out.exists():
        # rank 0 writes the result atomically after the last collective: a crash after it (at teardown) does not
        # change what was measured, and is said in the result
        result = json.loads(out.read_text())
        result["exit_after_result"] = returncode
        shutil.rmtree(log_dir, ignore_errors=True)
        return result
    if returncode != 0 or not out.exists():
        tail = "\n".join(launched.output.splitlines()[-20:])
        raise TPCheckError(
            f"TP check failed (exit {returncode}): {' '.join(cmd)}\n--- launcher ---\n{tail}\n{log_tails(log_dir)}"
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
    The result holds measured numbers only; ``modbuild.verify.tp_check.record_from`` applies the bounds.
    """
    args = ["--model", model] + ["--sequence-parallel"] * sequence_parallel + ["--tied"] * tied
    return _launch(args, timeout, extra_env)


def run_train_tp2(model: str, timeout: float = 300, extra_env: Mapping[str, str] | None = None) -> dict:
    """The worker's train mode: 20 training steps of ``generated.<model>`` at TP=1 and TP=2 (and TP=2 with
    sequence parallelism where supported), one launch. Returns ``{"reference": curves, "cases": [...]}``; the
    ``train-tp2`` record (``modbuild/verify/train_check.py``) applies the bounds."""
    return _launch(["--model", model, "--worker-mode", "train"], timeout, extra_env)


def run_tp2_cases(
    cases: Iterable[str | Case], timeout: float = 300, extra_env: Mapping[str, str] | None = None
) -> dict:
    """Several cases (``"qwen2"``, ``"llama:tied"``, ``"qwen2:sp"``, ...) in a single 2-process launch.

    Returns ``{"gloo_shim", "collectives", "collectives_max_abs", "cases": [one dict per case]}``.
    """
    specs = [c.spec if isinstance(c, Case) else Case.parse(c).spec for c in cases]
    if len(set(specs)) != len(specs):
        raise ValueError(f"duplicate cases in {specs}")
    return _launch(["--cases", ",".join(specs)], timeout, extra_env)
