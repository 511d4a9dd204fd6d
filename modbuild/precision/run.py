"""Run the precision table: per size, an HF process then a Paddle process, and the verdict against the seed.

The two frameworks never share a process: the HF process writes its checkpoint and every tensor to a scratch
directory and exits (its memory goes back to the OS), then the Paddle process compares against those files
one tensor at a time. Each reports its own peak RSS. The scratch directory is deleted at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modbuild.precision.common import write_result
from modbuild.precision.sizes import SIZES, Size, batch

METRICS = ("logits", "loss", "forward", "grads")


class SideError(RuntimeError):
    """A framework process failed: the message holds its error and the tail of its log."""


@dataclass
class Settings:
    threads: int = 2
    reps: int = 3  # timed forward+backward repeats (0: no timings)
    prompt_len: int = 16
    new_tokens: int = 16
    rows: int = 2
    length: int = 48
    pads: int = 8
    seed: int = 0


def prepare(size: Size, workdir: Path, settings: Settings) -> dict:
    """Write the batch and return the job both sides share."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = batch(size.config["vocab_size"], settings.rows, settings.length, settings.pads, settings.seed)
    np.savez(workdir / "batch.npz", **data)
    return {
        "size": size.name,
        "config": size.config,
        "workdir": str(workdir),
        "seed": settings.seed,
        "threads": settings.threads,
        "reps": settings.reps,
        "prompt_len": settings.prompt_len,
        "new_tokens": settings.new_tokens,
    }


def run_side(side: str, job: dict, root: Path, tag: str | None = None, **extra) -> dict:
    """Run one side in a fresh Python process with `root` first on its path; its result, with its wall time."""
    workdir = Path(job["workdir"])
    tag = tag or side
    job_path, result_path, log_path = (workdir / f"{tag}.{ext}" for ext in ("job.json", "result.json", "log"))
    write_result(job_path, {**job, "side": side, **extra})
    result_path.unlink(missing_ok=True)
    threads = str(job["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONWARNINGS"] = "ignore"
    start = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.call(
            [sys.executable, "-m", "modbuild.precision.worker", str(job_path), str(result_path)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
    wall = time.perf_counter() - start
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    if code != 0 or "error" in result:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        reason = result.get("error") or f"exit status {code} (killed? out of memory?)"
        raise SideError(f"{job['size']} {tag}: {reason}\n{tail}")
    result["wall_s"] = wall
    return result


def _worst(rows: list[dict], key: str = "max_abs") -> dict:
    return max(rows, key=lambda r: r[key]) if rows else {"name": "-", "max_abs": float("inf"), "max_rel": float("inf")}


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return ".".join(parts[: parts.index("layers") + 2]) if "layers" in parts[:-1] else None


def per_layer(forward: list[dict], grads: list[dict]) -> list[dict]:
    """Per decoder layer: its output's error, and the worst forward tensor and gradient inside it."""
    layers: dict[str, dict] = {}
    for kind, rows in (("forward", forward), ("grads", grads)):
        for row in rows:
            layer = _layer(row["name"])
            if layer is None:
                continue
            entry = layers.setdefault(layer, {"layer": layer, "output": None, "forward": None, "grads": None})
            if kind == "forward" and row["name"] == layer:
                entry["output"] = row["max_abs"]
            if entry[kind] is None or row["max_abs"] > entry[kind]["max_abs"]:
                entry[kind] = {"name": row["name"], "max_abs": row["max_abs"], "max_rel": row["max_rel"]}
    return sorted(layers.values(), key=lambda e: int(e["layer"].rsplit(".", 1)[1]))


def evaluate(size: Size, hf: dict, pd: dict) -> dict:
    """The row of the table: the four metrics (max abs, as the seed measures), their bounds, and the verdict.

    Also failing: a parameter whose gradient was not compared, or a decoder layer whose output was not: the
    table must never pass on a comparison that did not happen."""
    worst_fwd, worst_grad = _worst(pd["forward"]), _worst(pd["grads"])
    metrics = {
        "logits": pd["logits"]["max_abs"],
        "loss": pd["loss_diff"],
        "forward": worst_fwd["max_abs"],
        "grads": worst_grad["max_abs"],
    }
    layers = per_layer(pd["forward"], pd["grads"])
    problems = [f"{k} {metrics[k]:.2e} > {size.bounds[k]:.0e}" for k in METRICS if not metrics[k] <= size.bounds[k]]
    if pd["missing_grads"]:
        problems.append(f"gradients not compared: {pd['missing_grads'][:4]}")
    uncompared = [e["layer"] for e in layers if e["output"] is None]
    if len(layers) != size.config["num_hidden_layers"] or uncompared:
        problems.append(f"decoder layer outputs not compared: {uncompared or 'some layers missing'}")
    agree = None
    if "timing" in hf and "timing" in pd:
        agree = sum(a == b for a, b in zip(hf["timing"]["tokens"], pd["timing"]["tokens"]))
    return {
        "size": size.name,
        "model": size.model,
        "label": size.label,
        "config": size.config,
        "params": hf["params"],
        "metrics": metrics,
        "bounds": size.bounds,
        "passed": not problems,
        "problems": problems,
        "worst_forward": worst_fwd,
        "worst_grad": worst_grad,
        "worst_forward_rel": _worst(pd["forward"], "max_rel"),
        "worst_grad_rel": _worst(pd["grads"], "max_rel"),
        "logits": pd["logits"],
        "loss": {"hf": hf["loss"], "paddle": pd["loss"]},
        "counts": {"forward": len(pd["forward"]), "grads": len(pd["grads"])},
        "skipped": pd["skipped"],
        "unpaired_hf_modules": pd["unpaired_hf_modules"],
        "layers": layers,
        "decode_tokens_agree": agree,
        "frameworks": {"hf": _side_summary(hf), "paddle": _side_summary(pd)},
        "tensors": {"forward": pd["forward"], "grads": pd["grads"]},
    }


def _side_summary(result: dict) -> dict:
    keys = ("framework", "wall_s", "init_s", "save_s", "convert_s", "load_s", "first_fwd_bwd_s", "timing", "rss")
    return {k: result[k] for k in keys if k in result} | {k: v for k, v in result.items() if k.startswith("rss_after")}


def measure(size: Size, root: Path, settings: Settings, scratch: Path | None = None, log=print) -> dict:
    """One size, end to end, in a scratch directory deleted afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=f"precision-{size.name}-", dir=scratch))
    try:
        job = prepare(size, workdir, settings)
        hf = run_side("hf", job, root)
        log(f"precision {size.name}: hf done in {hf['wall_s']:.0f} s, peak RSS {hf['rss']['peak_gib']:.1f} GiB")
        pd = run_side("paddle", job, root, hf=_for_paddle(hf))
        log(f"precision {size.name}: paddle done in {pd['wall_s']:.0f} s, peak RSS {pd['rss']['peak_gib']:.1f} GiB")
        return evaluate(size, hf, pd)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _for_paddle(hf: dict) -> dict:
    """What the Paddle process needs from the HF one: names and shapes of the saved tensors, and the loss."""
    return {"modules": hf["modules"], "grads": hf["grads"], "loss": hf["loss"]}


def run_precision(
    root: Path, sizes: list[str] | None = None, settings: Settings | None = None, scratch: Path | None = None
) -> bool:
    """Measure each size (default 0.5b and 1.5b), write reports/precision.json and reports/precision.md under
    `root`, and return True if every size is within the seed's bounds. A size whose process fails is a failed
    row with the error, and the others still run."""
    from modbuild.atomic import atomic_write
    from modbuild.precision.report import markdown

    root = Path(root).resolve()
    settings = settings or Settings()
    names = sizes or ["0.5b", "1.5b"]
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        raise ValueError(f"unknown sizes {unknown} (known: {', '.join(SIZES)})")
    start = time.perf_counter()
    rows = []
    for name in names:
        size = SIZES[name]
        try:
            rows.append(measure(size, root, settings, scratch))
        except SideError as exc:
            print(str(exc), file=sys.stderr)
            rows.append({"size": name, "model": size.model, "label": size.label, "passed": False, "error": str(exc)})
        row = rows[-1]
        verdict = "ok" if row["passed"] else "FAIL " + "; ".join(row.get("problems", [])) + row.get("error", "")[:200]
        print(f"precision {name}: {verdict}")
    report = {
        "total_s": time.perf_counter() - start,
        "settings": vars(settings),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "rows": rows,
    }
    (root / "reports").mkdir(exist_ok=True)
    atomic_write(root / "reports" / "precision.json", json.dumps(report, indent=1) + "\n")
    atomic_write(root / "reports" / "precision.md", markdown(report))
    return all(r["passed"] for r in rows)
