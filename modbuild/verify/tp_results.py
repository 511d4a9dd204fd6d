"""One TP request for both of a model's TP checks (`tp2` and `train-tp2`).

Whichever of the two checks runs first asks this run's TP pool (`tp_run.run_tp_checks`: one launch per run) for
both (the worker's `both` mode) and leaves the other's result here; the other takes it, once.

A left result is used only if it came from the same sources (the model's generated files, its spec, and the
code of the checks, the TP worker and modbuild.nn), and only once: running a check again asks again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import modbuild

CHECKS = ("tp2", "train-tp2")


def _digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.name).encode() + b"\0" + (path.read_bytes() if path.is_file() else b"") + b"\0")
    return digest.hexdigest()


def code_digest() -> str:
    """The checks' code: modbuild/tp, modbuild/nn and modbuild/verify."""
    package = Path(modbuild.__file__).parent
    return _digest(sorted(p for folder in ("tp", "nn", "verify") for p in (package / folder).glob("*.py")))


def model_digest(model: str) -> str:
    """The model's generated files and its spec (modular/<m>/model.toml)."""
    import generated

    files = sorted(Path(generated.__file__).parent.joinpath(model).glob("*.py"))
    return _digest([*files, Path(generated.__file__).resolve().parent.parent / "modular" / model / "model.toml"])


def combine(code: str, model: str) -> str:
    return hashlib.sha256(f"{code}:{model}".encode()).hexdigest()


def sources_key(model: str) -> str:
    """A hash of everything a TP result depends on. The TP pool's ranks compute the same key from the code they
    imported and the model files they loaded; an answer under another key is not used (`tp_run.run_tp_checks`)."""
    return combine(code_digest(), model_digest(model))


def tp_result(
    model: str,
    check: str,
    launch: Callable[[str], dict],
    store: Path | None = None,
    alone: Callable[[str], dict] | None = None,
) -> dict:
    """`check`'s result for `model`: the one the other TP check left from its request, else a new request for
    both (`launch(model)` returns `{"tp2": ..., "train-tp2": ...}`), leaving the other's result.
    With MODBUILD_TP_SHARED=0, `alone(model)` launches this check only (bench/train.py's baseline)."""
    if check not in CHECKS:
        raise ValueError(f"{check}: not a TP check ({', '.join(CHECKS)})")
    if alone is not None and os.environ.get("MODBUILD_TP_SHARED") == "0":
        return alone(model)
    store = store or Path(tempfile.gettempdir()) / "modbuild-tp-results"
    store.mkdir(parents=True, exist_ok=True)
    key = sources_key(model)
    path = store / f"{model}.{check}.json"
    with open(store / f"{model}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other check, under `doit -n 2`, waits for this request
        if path.is_file():
            left = json.loads(path.read_text())
            path.unlink()  # once only
            if left.get("key") == key:
                return left["result"]
        results = launch(model)
        (other,) = [c for c in CHECKS if c != check]
        tmp = store / f".{model}.{other}.json.tmp"
        tmp.write_text(json.dumps({"key": key, "result": results[other]}))
        tmp.replace(store / f"{model}.{other}.json")
        return results[check]
