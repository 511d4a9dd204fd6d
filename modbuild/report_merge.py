"""`modbuild report merge A.json B.json ...`: join the reports of `doit verify --shard K/N` jobs.

Every shard starts from the same committed reports/verify.json (the base) and replaces the rows of the checks it
ran. So a row that differs from the base came from its shard; rows equal to the base are the same either way.
Two inputs that both changed one check, differently, are an error (shards that overlap, or reports of different
runs). The result goes to reports/verify.json and reports/verify.md of `--root`, and a `timings.json` beside an
input (its shard's check times) is merged into reports/timings.json the same way.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

from modbuild.atomic import atomic_write
from modbuild.verify.profile import TIMINGS, load_timings
from modbuild.verify.report import ReportError, markdown, merged, stored_records, versions


class MergeError(ValueError):
    """Inputs that cannot be joined; the message names the files."""


def _changed(base: dict, inputs: list[tuple[Path, dict]]) -> dict:
    """key -> value for every key whose value differs from `base` in some input; conflicts are errors."""
    out: dict = {}
    source: dict = {}
    for path, items in inputs:
        for key, value in items.items():
            if base.get(key) == value:
                continue
            if key in out and out[key] != value:
                name = ":".join(key) if isinstance(key, tuple) else key
                raise MergeError(
                    f"{source[key]} and {path} both ran {name}, with different results: "
                    "shards of one run never overlap (merge the reports of one run)"
                )
            out[key], source[key] = value, path
    return out


def _records(path: Path) -> dict:
    if not path.is_file():
        raise MergeError(f"{path}: no such file")
    try:
        return {(r["model"], r["check"]): r for r in stored_records(path)}
    except ReportError as exc:
        raise MergeError(str(exc)) from None


def _versions(inputs: list[Path]) -> dict:
    """The package versions the shards ran with (the first input's), not this machine's: the merging job may
    have installed only the core."""
    for path in inputs:
        found = json.loads(path.read_text()).get("versions")
        if isinstance(found, dict) and found:
            return found
    return versions()


def merge_reports(root: Path, inputs: list[Path]) -> tuple[int, int]:
    """Write the joined report into `root`/reports; returns (checks taken from the inputs, rows in all)."""
    reports = Path(root) / "reports"
    base_path = reports / "verify.json"
    base = _records(base_path) if base_path.is_file() else {}
    loaded = [(path, _records(path)) for path in inputs]
    taken = _changed(base, loaded)
    times = _changed(
        load_timings(reports / TIMINGS), [(p, load_timings(p.parent / TIMINGS)) for p in inputs if p.parent != reports]
    )
    reports.mkdir(parents=True, exist_ok=True)
    with open(reports / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the lock `doit verify` writes the report under
        records = merged(Path(root), list(base.values()), list(taken.values()))
        report = {"versions": _versions(inputs), "records": records}
        atomic_write(base_path, json.dumps(report, indent=1) + "\n")
        atomic_write(reports / "verify.md", markdown(records))
    if times:
        timings = {**load_timings(reports / TIMINGS), **times}
        atomic_write(reports / TIMINGS, json.dumps(dict(sorted(timings.items())), indent=1) + "\n")
    return len(taken), len(records)


def merge_command(root: Path, inputs: list[Path]) -> int:
    """The CLI: one line saying what was joined, or the error naming the files (exit 1)."""
    import sys

    try:
        taken, rows = merge_reports(root, inputs)
    except MergeError as exc:
        print(f"report merge: {exc}", file=sys.stderr)
        return 1
    reports = Path(root) / "reports"
    print(
        f"merged {len(inputs)} reports: {taken} checks from the shards, {rows} rows in all -> "
        f"{reports / 'verify.json'}, {reports / 'verify.md'}"
    )
    return 0
