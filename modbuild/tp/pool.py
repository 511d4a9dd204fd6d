"""One tensor-parallel launch per run: a pool of two ranks that serves request after request.

A launch costs ~13 s before any check runs (the launcher, two processes importing paddle and paddlenlp, fleet,
gloo). The first TP request of a run starts the pool; every later one, from any doit worker, is queued to it.

The pool directory (one per run: the owning process and the models tree; see `pool_dir`)::

    pool.json              the launcher's pid and start time, written by the client that started it
    ready                  rank 0, once fleet is up
    requests/<t>-<id>.json a client's request, written atomically
    taken/<n>.json         rank 0's n-th pick (a request, or {"stop": why}); rank 1 follows the same order
    results/<id>.json      rank 0's answer: {"result": ..., "seconds": compute time, "key": sources}
    results/<id>.used      the answer once its client has read it
    results/<id>.error<r>  rank r's traceback when the request failed there
    queued                 written once the run's requests were queued ahead (`enqueue`)
    logs/                  the launcher's and the ranks' logs

A run can queue its requests ahead (`enqueue`, once per pool): each gets the id its client will ask for, and
`submit(..., queued=id)` then waits for that answer instead of asking again.

A request that fails in a rank (an exception, or a crash) is that request's error: the rank writes its traceback
and exits, the client stops what is left of the pool, and the next request starts a new one. The pool stops
itself when idle for `IDLE` seconds, and at once when its owner (the doit run) is gone; nothing outlives the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from modbuild.atomic import atomic_write
from modbuild.tp.launch import (
    ROOT,
    TP_DEGREE,
    _descendants,
    _stat,
    launcher_command,
    log_tails,
    one_launch_at_a_time,
    start_launcher,
)

IDLE = 120.0  # seconds without a request before the pool stops itself
START_TIMEOUT = 300.0
POLL = 0.02


class PoolError(RuntimeError):
    """A request failed: the message says in which rank and ends with the ranks' log tails."""


# ---------------------------------------------------------------------------------------------------- processes


def alive(pid: int, start: int) -> bool:
    """The process `pid` started at `start` still runs (not a zombie, not a new process reusing the pid)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z" and int(fields[19]) == start


def owner_process() -> tuple[int, int]:
    """(pid, start time) of the run this process belongs to: doit's main process when this is one of its
    `-n N` workers (a multiprocessing child), else this process."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    pid = parent.pid if parent is not None and parent.pid else os.getpid()
    stat = _stat(pid)
    return pid, stat[1] if stat else 0


def stop_tree(pid: int, start: int, grace: float = 5.0) -> None:
    """Stop the launcher `pid` and every process below it (its ranks run in sessions of their own)."""
    if not alive(pid, start):
        return
    below = _descendants(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)  # the launcher's handler terminates its ranks
    deadline = time.monotonic() + grace
    while alive(pid, start) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # the launcher leads its own group
    for child, child_start in below.items():
        if alive(child, child_start):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)


# ------------------------------------------------------------------------------------------------------- client


def pool_dir(owner: tuple[int, int], models_root: Path) -> Path:
    import tempfile

    tree = hashlib.sha256(str(models_root).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"modbuild-tp-pool-{os.getuid()}" / f"{owner[0]}-{owner[1]}-{tree}"


_started: list[subprocess.Popen] = []  # launchers this process started (reaped by Popen's own bookkeeping)


def _running(folder: Path) -> tuple[int, int] | None:
    try:
        info = json.loads((folder / "pool.json").read_text())
    except (OSError, ValueError):
        return None
    launcher = (info["pid"], info["start"])
    return launcher if alive(*launcher) else None


def _remove_dead_pools(parent: Path) -> None:
    """Pool directories of runs that have ended (named `<pid>-<start>-<tree>`, all written here)."""
    import shutil

    for folder in parent.glob("*-*-*"):
        pid, start, _ = folder.name.split("-", 2)
        if pid.isdigit() and start.isdigit() and not alive(int(pid), int(start)):
            shutil.rmtree(folder, ignore_errors=True)


def ensure_pool(folder: Path, script: Path, owner: tuple[int, int], idle: float, env: Mapping[str, str]) -> tuple:
    """The pool's launcher (pid, start): the running one, else a new launch whose ranks are ready."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one start per pool, whichever worker asks first
        if (launcher := _running(folder)) is not None:
            return launcher
        return _start(folder, script, owner, idle, env)


def _start(folder: Path, script: Path, owner: tuple[int, int], idle: float, env: Mapping[str, str]) -> tuple:
    import shutil

    _remove_dead_pools(folder.parent)
    shutil.rmtree(folder / "taken", ignore_errors=True)  # a dead pool's order; pending requests stay for the new one
    (folder / "ready").unlink(missing_ok=True)
    for sub in ("requests", "taken", "results", "logs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    serve = ["--pool-dir", str(folder), "--owner", f"{owner[0]}:{owner[1]}", "--idle", str(idle)]
    cmd = launcher_command(script, TP_DEGREE, folder / "logs", serve)
    with one_launch_at_a_time():  # the rendezvous and gloo ports are raced for only while starting
        proc = start_launcher(cmd, ROOT, env, folder / "logs" / "launcher.log")
        _started.append(proc)
        launcher = (proc.pid, _stat(proc.pid)[1] if _stat(proc.pid) else 0)
        atomic_write(folder / "pool.json", json.dumps({"pid": launcher[0], "start": launcher[1], "cmd": cmd}))
        deadline = time.monotonic() + START_TIMEOUT
        while not (folder / "ready").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_tree(*launcher)
                why = (
                    f"exit {proc.returncode}" if proc.returncode is not None else f"not ready in {START_TIMEOUT:.0f} s"
                )
                raise PoolError(f"TP pool did not start ({why}): {' '.join(cmd)}\n{log_tails(folder / 'logs')}")
            time.sleep(0.05)
    return launcher


def submit(
    script: Path,
    request: dict,
    models_root: Path,
    timeout: float = 600,
    idle: float = IDLE,
    env: Mapping[str, str] | None = None,
    queued: str | None = None,
) -> dict:
    """Run `request` in this run's pool (started if need be) and return rank 0's answer
    ``{"result", "seconds", "key"}``; with `queued`, the answer to that request queued ahead (`enqueue`) when it
    is still to come. Raises PoolError when it failed in a rank or took over `timeout` s."""
    owner = owner_process()
    folder = pool_dir(owner, models_root)
    deadline = time.monotonic() + timeout
    launcher = ensure_pool(folder, script, owner, idle, env or {})
    if queued is not None and _waiting(folder, queued):
        rid = queued
    else:
        rid = uuid.uuid4().hex
        _write_request(folder, {**request, "id": rid})
    while True:
        answer = _answer(folder, rid, launcher)
        if answer is not None:
            return answer
        if time.monotonic() > deadline:
            stop_tree(*launcher)
            raise PoolError(
                f"TP request {_what(request)} timed out after {timeout:.0f} s\n{log_tails(folder / 'logs')}"
            )
        if not alive(*launcher):
            if list((folder / "requests").glob(f"*-{rid}.json")):  # never taken: the pool stopped idle; a new one
                launcher = ensure_pool(folder, script, owner, idle, env or {})
                continue
            if (answer := _answer(folder, rid, launcher)) is not None:
                return answer
            raise PoolError(f"TP pool ended while running {_what(request)}\n{log_tails(folder / 'logs')}")
        time.sleep(POLL)


def enqueue(
    script: Path, requests: list[dict], models_root: Path, idle: float = IDLE, env: Mapping[str, str] | None = None
) -> None:
    """Queue `requests` (each with its own "id") in this run's pool, started if need be; once per pool, so that a
    later call (from any worker) queues nothing again."""
    import fcntl

    owner = owner_process()
    folder = pool_dir(owner, models_root)
    ensure_pool(folder, script, owner, idle, env or {})
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / "queued").exists():
            return
        for request in requests:
            _write_request(folder, request)
        atomic_write(folder / "queued", "")


def _write_request(folder: Path, request: dict) -> None:
    atomic_write(folder / "requests" / f"{time.time_ns()}-{request['id']}.json", json.dumps(request))


def _waiting(folder: Path, rid: str) -> bool:
    """Request `rid` is queued, running or answered, and its answer not read yet."""
    if (folder / "results" / f"{rid}.used").exists():
        return False
    if (folder / "results" / f"{rid}.json").exists() or list((folder / "requests").glob(f"*-{rid}.json")):
        return True
    for path in (folder / "taken").glob("*.json"):  # taken/ holds only the running pool's picks
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("id") == rid:
                return not list((folder / "results").glob(f"{rid}.error*"))
    return False


def _what(request: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in request.items() if k not in ("id", "key"))


def _answer(folder: Path, rid: str, launcher: tuple[int, int]) -> dict | None:
    done = folder / "results" / f"{rid}.json"
    if done.is_file():
        answer = json.loads(done.read_text())
        done.replace(done.with_suffix(".used"))
        return answer
    errors = sorted((folder / "results").glob(f"{rid}.error*"))
    if not errors:
        return None
    time.sleep(1.0)  # the other rank's traceback, when it failed too
    errors = sorted((folder / "results").glob(f"{rid}.error*"))
    text = "\n".join(f"--- rank {p.name.rsplit('error', 1)[1]} ---\n{p.read_text()}" for p in errors)
    stop_tree(*launcher)  # the ranks' collectives are out of step now; the next request starts a new pool
    for path in errors:
        path.unlink(missing_ok=True)
    raise PoolError(f"{text}\n{log_tails(folder / 'logs')}")


# -------------------------------------------------------------------------------------------------------- ranks


_watching: list[tuple[int, int]] = []


def watch_owner(owner: tuple[int, int]) -> None:
    """A thread that ends this rank, and the launcher above it, as soon as the run that owns the pool is gone.
    Started before the rank imports paddle (`watch_from_argv`): a run stopped while the pool starts leaves nothing."""
    if owner in _watching:
        return
    _watching.append(owner)
    launcher = os.getppid()

    def watch() -> None:
        while alive(*owner):
            time.sleep(0.2)
        if os.getppid() == launcher:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(launcher, signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def watch_from_argv(argv: list[str]) -> None:
    """`watch_owner` for a rank started with ``--owner PID:START`` (the pool's command line)."""
    if "--owner" in argv and argv.index("--owner") + 1 < len(argv):
        pid, _, start = argv[argv.index("--owner") + 1].partition(":")
        if pid.isdigit() and start.isdigit():
            watch_owner((int(pid), int(start)))


def _pick(folder: Path, n: int, idle: float) -> dict:
    """Rank 0: the oldest request (moved to taken/<n>.json, which rank 1 reads), or a stop after `idle` s."""
    since = time.monotonic()
    while True:
        for path in sorted((folder / "requests").glob("*.json")):
            target = folder / "taken" / f"{n:06d}.json"
            try:
                path.replace(target)
            except FileNotFoundError:
                continue
            return json.loads(target.read_text())
        if time.monotonic() - since > idle:
            atomic_write(folder / "taken" / f"{n:06d}.json", json.dumps({"stop": f"idle {idle:.0f} s"}))
            return {"stop": "idle"}
        time.sleep(POLL)


def _follow(folder: Path, n: int) -> dict:
    """Rank 1: rank 0's n-th pick."""
    path = folder / "taken" / f"{n:06d}.json"
    while not path.is_file():
        time.sleep(POLL)
    return json.loads(path.read_text())


def serve(
    folder: Path, rank: int, owner: tuple[int, int], idle: float, handle: Callable[[dict], tuple[dict, str | None]]
) -> int:
    """A rank's loop: take requests in rank 0's order and answer them with `handle` (which runs the same
    collectives on both ranks, and returns the result and the key of the sources it came from). A failure writes
    this rank's traceback and ends the process."""
    watch_owner(owner)
    if rank == 0:
        atomic_write(folder / "ready", "")
    n = 0
    while True:
        request = _pick(folder, n, idle) if rank == 0 else _follow(folder, n)
        n += 1
        if "stop" in request:
            return 0
        start = time.perf_counter()
        try:
            result, key = handle(request)
        except Exception:  # noqa: BLE001 - any failure is this request's, reported to its client
            atomic_write(folder / "results" / f"{request['id']}.error{rank}", traceback.format_exc())
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        if rank == 0:
            answer = {"result": result, "seconds": time.perf_counter() - start, "key": key}
            atomic_write(folder / "results" / f"{request['id']}.json", json.dumps(answer))
