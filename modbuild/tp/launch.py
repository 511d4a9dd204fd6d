"""Launch a script in two processes under ``paddle.distributed.launch`` on any machine (CPU/gloo included),
wait for them, and stop everything a launch started on a timeout, Ctrl-C or SIGTERM.

Used by the TP checks (``modbuild/verify/tp_run.py``, one launch per run through ``modbuild/tp/pool.py``) and the
training engine (``modbuild/engine/launch.py``). This module imports no paddle until a launch, so the verify task
and the tests can import it cheaply; nothing in ``modbuild/tp`` imports ``modbuild/verify``.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[2]
TP_DEGREE = 2


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


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])


def _descendants(pid: int) -> dict[int, int]:
    """Every process below `pid` (children, their children, ...) -> its start time; empty where /proc is not."""
    parents: dict[int, list[tuple[int, int]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        if (info := _stat(int(stat.parent.name))) is not None:
            parents.setdefault(info[0], []).append((int(stat.parent.name), info[1]))
    found, todo = {}, [pid]
    while todo:
        for child, start in parents.get(todo.pop(), []):
            if child not in found:
                found[child] = start
                todo.append(child)
    return found


def stop_launch(proc: subprocess.Popen) -> None:
    """Stop the launcher and every process below it: the launcher starts its workers in sessions of their own, so
    neither a terminal's Ctrl-C nor the launcher's own group reaches them."""
    below = _descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)  # the launcher's handler terminates its workers
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher leads its own group (start_new_session)
    for pid, start in below.items():
        info = _stat(pid)
        if info is not None and info[1] == start:  # the same process, not a new one that reuses the pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    proc.wait()


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


class _Follow:
    """Copy what a growing log file gains to a stream (rank 0's progress to the user's terminal)."""

    def __init__(self, path: Path, stream: TextIO | None) -> None:
        self.path, self.stream, self.offset = path, stream, 0
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def __call__(self) -> None:
        if self.stream is None or not self.path.is_file():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        if text := self.decoder.decode(data):
            self.stream.write(text)
            self.stream.flush()


def _wait(proc: subprocess.Popen, timeout: float | None, follow: _Follow) -> int | None:
    """The launcher's exit status, or None after stopping it at `timeout` (None: no limit); `follow` runs as output
    arrives."""
    deadline = time.monotonic() + timeout if timeout is not None else float("inf")
    while True:
        try:
            returncode = proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            follow()
            if time.monotonic() > deadline:
                stop_launch(proc)
                return None
            continue
        follow()
        return returncode


def launcher_command(script: Path, nproc: int, log_dir: Path, args: list[str]) -> list[str]:
    """``python -m paddle.distributed.launch`` of `script` (its launcher runs script paths only, not -m)."""
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc)]
    return [*cmd, "--log_dir", str(log_dir), str(script), *args]


def start_launcher(cmd: list[str], cwd: Path, extra_env: Mapping[str, str] | None, log: Path) -> subprocess.Popen:
    """The launcher, its output appended to `log`, in a process group of its own (stopped as a whole)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=launch_env(extra_env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def distributed_launch(
    script: Path,
    args: list[str],
    nproc: int,
    log_dir: Path,
    extra_env: Mapping[str, str] | None,
    timeout: float | None,
    cwd: Path = ROOT,
    echo: TextIO | None = None,
) -> Launch:
    """``python -m paddle.distributed.launch`` of `script` in `nproc` processes, one launch at a time, from `cwd`;
    rank 0's log is copied to `echo` as it grows. Stopped, workers included, after `timeout` seconds, and on any
    exception here (KeyboardInterrupt from Ctrl-C or a SIGTERM handler): nothing it started outlives it."""
    cmd = launcher_command(script, nproc, log_dir, args)
    log_dir.mkdir(parents=True, exist_ok=True)
    launcher_log = log_dir / "launcher.log"
    with one_launch_at_a_time():
        start = launcher_log.stat().st_size if launcher_log.exists() else 0
        follow = _Follow(log_dir / "workerlog.0", echo)
        if echo is not None and follow.path.is_file():
            follow.offset = follow.path.stat().st_size  # an earlier launch's lines (the logs are appended to)
        proc = start_launcher(cmd, cwd, extra_env, launcher_log)
        try:
            returncode = _wait(proc, timeout, follow)
        except BaseException:
            stop_launch(proc)
            raise
    with open(launcher_log, "rb") as f:
        f.seek(start)
        output = f.read().decode(errors="replace")
    return Launch(cmd, returncode, output)
