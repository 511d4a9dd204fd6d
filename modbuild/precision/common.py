"""What both framework processes share: numpy only, so neither process imports the other framework."""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

CHUNK = 1 << 22  # elements per block when comparing: a 900 MB embedding gradient never doubles in float64


def diff_stats(mine: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max |mine - ref|, max |ref|) over every element, in float64, a block at a time."""
    if mine.shape != ref.shape:
        raise ValueError(f"shape {mine.shape} != reference {ref.shape}")
    a, b = mine.reshape(-1), ref.reshape(-1)
    worst = scale = 0.0
    for start in range(0, a.size, CHUNK):
        x = a[start : start + CHUNK].astype("float64")
        y = b[start : start + CHUNK].astype("float64")
        worst = max(worst, float(np.abs(x - y).max()))
        scale = max(scale, float(np.abs(y).max()))
    return worst, scale


def summary(name: str, ref_name: str, mine: np.ndarray, ref: np.ndarray) -> dict:
    """One tensor's comparison: max abs, and max rel = max abs / max |ref| (the tensor's own scale)."""
    worst, scale = diff_stats(mine, ref)
    return {
        "name": name,
        "ref": ref_name,
        "shape": list(mine.shape),
        "max_abs": worst,
        "max_rel": worst / scale if scale else worst,
        "ref_max": scale,
    }


def rss() -> dict[str, float]:
    """This process's peak and current resident set size, GiB (the peak is ru_maxrss, kernel-kept)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    current = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"peak_gib": peak / 2**30, "current_gib": current / 2**30}


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def median_time(fn: Callable[[], None], reps: int, before: Callable[[], None] | None = None) -> tuple[float, list]:
    """Median wall seconds of `reps` calls of `fn`; `before` runs untimed ahead of each call."""
    times = []
    for _ in range(reps):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), times


def load_job(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def write_result(path: Path, result: dict) -> None:
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)


def load_batch(workdir: Path) -> dict[str, np.ndarray]:
    with np.load(Path(workdir) / "batch.npz") as data:
        return {k: data[k] for k in data.files}


def safe_name(name: str) -> str:
    """A tensor name as a file name (module names carry dots only, but the root module's is empty)."""
    return (name or "_root").replace("/", "_")
