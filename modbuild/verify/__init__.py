"""Numerical verification of generated models: one function per check, results as `Record`s.

Frameworks are imported only when a check runs, once per doit worker process.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from modbuild.verify.record import Record, first_line

# every model; `real` too for a model with real weights
CHECKS = ("modular", "hf", "paddlenlp", "tp2", "train", "train-tp2")
TP_CHECKS = ("tp2", "train-tp2")  # both answered by one request to the run's TP pool (`tp_run`)
TRAIN_CHECKS = ("train", "train-tp2")  # also written to reports/train.md, with loss plots in reports/train/


def _run(root: Path | None, model: str, check: str, modeling=None) -> Record:
    if modeling is not None and check != "hf":
        raise ValueError("a substitute module can be checked against hf only")
    if check == "modular":
        from modbuild.verify.modular_check import check_modular

        return check_modular(root, model)
    if check == "hf":
        from modbuild.verify.hf_check import check_hf

        return check_hf(model, modeling)
    if check == "paddlenlp":
        from modbuild.verify.paddlenlp_check import check_paddlenlp

        return check_paddlenlp(model)
    if check == "tp2":
        from modbuild.verify.tp_check import check_tp2

        return check_tp2(model)
    if check in TRAIN_CHECKS:
        from modbuild.verify.specs import spec

        if not spec(model).causal:
            why = "training alignment runs a causal LM on text; masked-LM pre-training (the masking) is not aligned"
            return Record(model, check, notes=[why])
    if check == "train":
        from modbuild.verify.train_check import check_train

        return check_train(model, root)
    if check == "train-tp2":
        from modbuild.verify.train_check import check_train_tp2

        return check_train_tp2(model, root)
    if check == "real":
        from modbuild.verify.real_check import check_real
        from modbuild.verify.specs import spec

        if (real := spec(model).real) is None:
            raise ValueError(f"model '{model}' has no [verify.real] checkpoint in its model.toml")
        if not spec(model).causal:
            from modbuild.verify.real_embedding_check import check_real_embeddings

            return check_real_embeddings(root, model, real.name)
        return check_real(root, model, real.name)
    raise ValueError(f"unknown check '{check}' (one of {CHECKS})")


def verify(
    model: str,
    check: str,
    modeling=None,
    root: Path | None = None,
    bounds: dict[str, float] | None = None,
    trace: bool = False,
) -> Record:
    """Run one check; when it fails (or `trace`), trace the first diverging layer. `modeling` substitutes
    the generated module (the mutation tests pass a deliberately broken copy); `bounds` overrides bounds."""
    from modbuild.verify.specs import SpecError

    try:
        record = _run(root, model, check, modeling)
    except SpecError as exc:  # names the file; a traceback would only bury that
        record = Record(model, check, error=str(exc))
    except Exception as exc:  # a crash is a failed check with its traceback, never a pass
        record = Record(model, check, error=f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
    for key, value in (bounds or {}).items():
        if key in record.bounds:
            record.bounds[key] = value
    if check in ("hf", "paddlenlp") and record.applicable and not record.error and (trace or not record.passed):
        _trace(record, model, check, modeling)
    return record


def _trace(record: Record, model: str, check: str, modeling=None) -> None:
    from modbuild.verify.trace import first_divergence

    try:
        record.trace = first_divergence(model, check, modeling)
    except Exception as exc:  # the check's own verdict stands; say why there is no trace
        record.notes.append(f"no layer trace: {first_line(exc)}")


def run_check(root: Path, model: str, check: str, bounds: dict[str, float] | None = None, trace: bool = False) -> bool:
    """Run one check and store it in reports/ (doit's reporter prints its line from there); True if it passed.
    A failure's details and the layer trace go to stderr."""
    import time

    from modbuild.verify.profile import profiled, record_seconds
    from modbuild.verify.quiet import quiet_third_party
    from modbuild.verify.report import ReportError, save
    from modbuild.verify.threads import check_threads, set_math_threads

    start = time.perf_counter()
    with profiled(model, check):
        quiet_third_party()
        set_math_threads(check_threads())
        record = verify(model, check, root=root, bounds=bounds, trace=trace)
    record_seconds(root, model, check, time.perf_counter() - start)
    try:
        save(root, record)
        if check in TRAIN_CHECKS:
            from modbuild.verify.train_report import write

            write(root)
    except ReportError as exc:  # the check ran, but its result could not be merged into the reports
        print(f"verify:{model}:{check}: {exc}", file=sys.stderr)
        return False
    if record.applicable and not record.passed:
        problems = record.failures() if not record.error else [record.error]
        print(f"verify:{model}:{check}: " + "; ".join(problems), file=sys.stderr)
    for step in record.trace if (trace or not record.passed) else ():
        where = f"first divergence at {step['layer']}" if "layer" in step else f"after {step['decoder_layer']}"
        print(f"  {where}: max abs {step['max_abs']:.2e}", file=sys.stderr)
    return record.passed
