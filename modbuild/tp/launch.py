"""Launch the tensor-parallel check: two processes under ``paddle.distributed.launch``, each running
``modbuild/tp/worker.py``; wait for them and return rank 0's JSON.

From Python, ``run_tp2("qwen2")`` (one case) or ``run_tp2_cases(["llama", "qwen2:tied", "qwen2:sp"])`` (several
cases in one launch: imports dominate the ~13 s a launch costs). The result holds measured numbers only; whether
they are good enough is decided by the ``tp2`` record (``modbuild/verify/tp_check.py``, ``BOUNDS``).

This module imports no paddle until a launch, so the verify task and the tests can import it cheaply.
"""

from __future__ import annotations

import fcntl
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

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().with_name("worker.py")
TP_DEGREE = 2


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


def _compiled_with_cuda() -> bool:
    import paddle

    return paddle.is_compiled_with_cuda()


def _models_root() -> Path:
    import generated

    return Path(generated.__file__).resolve().parent.parent


def launch_env(extra_env: Mapping[str, str] | None) -> dict[str, str]:
    # Inherited PADDLE_* / FLAGS_selected_* (e.g. when called from inside another launch) would confuse the launcher.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PADDLE_", "FLAGS_selected_"))}
    if not _compiled_with_cuda():
        # A CPU build runs over gloo. The launcher treats *any* CUDA_VISIBLE_DEVICES, even "", as a GPU job and
        # dies with an IndexError selecting devices, so it is removed rather than set to "".
        env.pop("CUDA_VISIBLE_DEVICES", None)
    env.update(
        # the tree whose `generated` package this process checks, then this checkout
        PYTHONPATH=os.pathsep.join([str(_models_root()), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        OMP_NUM_THREADS="1",  # two ranks on a 2-core machine
        GLOG_v="0",
        FLAGS_call_stack_level="2",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    return env


def log_tails(log_dir: Path, lines: int = 40) -> str:
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


def stop_launch(proc: subprocess.Popen) -> None:
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
def one_launch_at_a_time() -> Iterator[None]:
    """Two launches at once (`doit -n 2 verify`) race for the rendezvous and gloo ports; a worker was seen
    aborting with SIGABRT. One launch keeps both cores busy anyway, so launches take turns."""
    with open(Path(tempfile.gettempdir()) / "modbuild-tp-launch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass
class Launch:
    cmd: list[str]
    returncode: int | None  # None: stopped at the timeout
    output: str  # the launcher's own output (the workers' is in the log directory)


def distributed_launch(
    script: Path, args: list[str], nproc: int, log_dir: Path, extra_env: Mapping[str, str] | None, timeout: float
) -> Launch:
    """``python -m paddle.distributed.launch`` of `script` in `nproc` processes, one launch at a time; stopped,
    workers included, after `timeout` seconds."""
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc)]
    cmd += ["--log_dir", str(log_dir), str(script), *args]  # paddle's launcher runs script paths only, not -m
    with one_launch_at_a_time():
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=launch_env(extra_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, killed as a whole on timeout
        )
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_launch(proc)
            output, _ = proc.communicate()
            return Launch(cmd, None, output)
    return Launch(cmd, proc.returncode, output)


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


def run_tp_checks(model: str, timeout: float = 600, extra_env: Mapping[str, str] | None = None) -> dict:
    """Both TP checks of ``generated.<model>`` in one launch (a launch costs ~13 s of start-up and imports):
    ``{"tp2": run_tp2's dict, "train-tp2": run_train_tp2's dict}``."""
    return _launch(["--model", model, "--worker-mode", "both"], timeout, extra_env)


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
