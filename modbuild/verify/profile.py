"""Where a check's wall time goes: imports, the HF side, the Paddle side, TP launch/IPC (bench/verify.py).

With ``MODBUILD_PROFILE_DIR`` set, `run_check` samples its own main thread every few milliseconds from a helper
thread and files each interval under the innermost frame that says what the process was doing: an import in
progress, code from torch/transformers (HF), from paddle/paddlenlp/the generated models (Paddle), or waiting on
the TP pool (launch/IPC). The TP ranks report their own compute time, which moves from launch/IPC to Paddle.
A sampler costs no changes to the checks and leaves their results alone; its split is an estimate, +- a sample.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from modbuild.atomic import atomic_write

KINDS = ("imports", "hf", "paddle", "launch", "other")
INTERVAL = 0.005
_HF = ("/torch/", "/transformers/", "/safetensors/")
_PADDLE = ("/paddle/", "/paddlenlp/", "/generated/", "/modbuild/nn/")
_LAUNCH = ("/modbuild/tp/", "/modbuild/verify/tp_run.py", "/modbuild/verify/tp_results.py")  # incl. waiting


def classify(frame) -> str:
    """The kind of work a stack is doing: an import anywhere on it wins (the first check in a worker pays them),
    then the innermost frame of a known library."""
    files = []
    while frame is not None:
        files.append(frame.f_code.co_filename)
        frame = frame.f_back
    if any(f.startswith("<frozen importlib") for f in files):
        return "imports"
    for name in files:  # innermost first
        if any(part in name for part in _LAUNCH):
            return "launch"
        if any(part in name for part in _HF):
            return "hf"
        if any(part in name for part in _PADDLE):
            return "paddle"
    return "other"


class Sampler:
    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id
        self.seconds = dict.fromkeys(KINDS, 0.0)
        self.stop = threading.Event()
        self.remote = 0.0  # compute time the TP ranks reported, inside "launch"

    def run(self) -> None:
        last = time.perf_counter()
        while not self.stop.wait(INTERVAL):
            frame = sys._current_frames().get(self.thread_id)
            now = time.perf_counter()
            # the whole interval since the last sample: a C call holding the GIL delays the sampler, not the clock
            self.seconds[classify(frame) if frame is not None else "other"] += now - last
            last = now

    def split(self, total: float) -> dict[str, float]:
        out = dict(self.seconds)
        moved = min(self.remote, out["launch"])
        out["launch"] -= moved
        out["paddle"] += moved
        out["other"] += max(0.0, total - sum(self.seconds.values()))
        return {k: round(v, 3) for k, v in out.items()} | {"total": round(total, 3)}


_current: Sampler | None = None


def add_remote(seconds: float) -> None:
    """Compute time spent for this check in other processes (the TP ranks), counted as the Paddle side."""
    if _current is not None:
        _current.remote += seconds


@contextmanager
def profiled(model: str, check: str):
    """Sample the check when MODBUILD_PROFILE_DIR is set, and write <dir>/<model>.<check>.json."""
    global _current
    folder = os.environ.get("MODBUILD_PROFILE_DIR")
    if not folder:
        yield
        return
    sampler = _current = Sampler(threading.get_ident())
    thread = threading.Thread(target=sampler.run, daemon=True)
    start = time.perf_counter()
    thread.start()
    try:
        yield
    finally:
        sampler.stop.set()
        thread.join()
        _current = None
        split = sampler.split(time.perf_counter() - start)
        atomic_write(Path(folder) / f"{model}.{check}.json", json.dumps(split) + "\n")


TIMINGS = "timings.json"


def record_seconds(root: Path, model: str, check: str, seconds: float) -> None:
    """reports/timings.json: each check's wall time in its last run (what `doit verify --shard` balances on)."""
    import fcntl

    reports = Path(root) / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    path = reports / TIMINGS
    with open(reports / ".lock", "w") as lock:  # the reports' lock (report.save takes it after this, not within)
        fcntl.flock(lock, fcntl.LOCK_EX)
        timings = load_timings(path)
        timings[f"{model}:{check}"] = round(seconds, 2)
        atomic_write(path, json.dumps(dict(sorted(timings.items())), indent=1) + "\n")


def load_timings(path: Path) -> dict[str, float]:
    """{"model:check": seconds}; {} when the file is missing or not such a map (timings only steer balance)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
