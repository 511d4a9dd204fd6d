"""`modbuild convert PATH...`: convert the modular files of any tree, without doit; `modbuild new`: a new model;
`modbuild train|evaluate CONFIG.yaml`: the training engine (`modbuild.engine.cli`); `modbuild report merge`: join
the verify reports of CI shards (`modbuild.report_merge`).

PATH is a modular file, a model directory, or a whole tree. The layout is read from the tree
(`modbuild.layout`): this repository's `modular/` + `generated/`, HF transformers' `models/<m>/`, or
PaddleNLP's `transformers/<m>/`. Models convert parents first (the same import graph doit uses);
with `-j N`, models whose parents are done convert in parallel. No ML framework is imported.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from modbuild.build import Outcome, build_model
from modbuild.graph import GraphError, Model, discover, parents_first
from modbuild.layout import STYLES, Layout, detect


def _tree_root(path: Path) -> Path:
    """The directory holding the model directories (or `modular/`) for a file or directory argument."""
    if path.is_file():
        path = path.parent.parent
    elif (path / f"modular_{path.name}.py").is_file():
        path = path.parent
    return path.parent if path.name == "modular" and (path.parent / "generated").is_dir() else path


def _selected(paths: list[Path], layout: Layout) -> set[str] | None:
    """Models named by the arguments; None means every model of the tree."""
    names: set[str] = set()
    for path in paths:
        if path.is_file():
            names.add(path.stem[len("modular_") :] if path.stem.startswith("modular_") else path.parent.name)
        elif (path / f"modular_{path.name}.py").is_file():
            names.add(path.name)
        else:
            return None
    return names


@dataclass
class Converted:
    """What happened to one model in a run."""

    outcome: Outcome | None = None  # None: not converted, because a parent could not be
    blocked_by: list[str] = field(default_factory=list)

    def state(self, check: bool) -> str:
        """converted / unchanged / failed, or with --check: up to date / stale / failed."""
        if self.outcome is None:
            return "failed"
        if self.outcome.ok:
            return "up to date" if check else ("converted" if self.outcome.written else "unchanged")
        # with --check, a model that converts but differs from its files on disk is stale: its children are
        # checked against its fresh conversion, not blocked
        return "stale" if check and self.outcome.outputs else "failed"

    def reason(self) -> str:
        if self.outcome is None:
            return f"parent {', '.join(self.blocked_by)} failed"
        first = self.outcome.problems[0]
        return "internal error" if ": internal error: " in first else first.split(": ", 1)[-1]


def traceback_of(outcome: Outcome) -> str | None:
    return getattr(outcome, "traceback", None) or None


def _internal_error(modular: Path, exc: BaseException) -> Outcome:
    """A converter bug as a problem of this model only (the others still convert); the traceback is kept for -v."""
    outcome = Outcome(Path(modular))
    outcome.problems.append(f"{modular}: internal error: {type(exc).__name__}: {exc}")
    outcome.traceback = "".join(traceback.format_exception(exc))
    return outcome


def _reader(fresh: dict[Path, str]) -> Callable[[Path], str | None]:
    """Parents' files from their fresh conversions (--check: a stale parent still checks its children)."""

    def read(path: Path) -> str | None:
        path = Path(path)
        if path in fresh:
            return fresh[path]
        return path.read_text() if path.is_file() else None

    return read


def _convert_one(modular: Path, layout: Layout, force: bool, check: bool, fresh: dict[Path, str]) -> Outcome:
    try:
        outcome = build_model(modular, layout, force=force, check=check, read=_reader(fresh) if check else None)
    except Exception as exc:  # noqa: BLE001 - whatever the converter raises fails this model only
        return _internal_error(modular, exc)
    if not check:
        outcome.outputs = {}  # the text stays in the worker: only what happened is sent back
    return outcome


class Run:
    """Convert models parents first; a model whose parent failed is not converted (with --check, one whose
    parent is only stale is checked against the parent's fresh conversion)."""

    def __init__(self, tree: dict[str, Model], layout: Layout, force: bool, check: bool, verbose: bool):
        self.tree, self.layout, self.force, self.check, self.verbose = tree, layout, force, check, verbose
        self.results: dict[str, Converted] = {}

    def parents(self, model: str) -> list[str]:
        return sorted(set(self.tree[model].parents) & self.tree.keys())

    def blocked(self, model: str) -> bool:
        """True (and reported) when a parent failed."""
        bad = [p for p in self.parents(model) if p in self.results and self.results[p].state(self.check) == "failed"]
        if bad:
            verb = "checked" if self.check else "converted"
            print(f"{self.layout.modular_file(model)}: not {verb}: parent {', '.join(bad)} failed", file=sys.stderr)
            self.results[model] = Converted(blocked_by=bad)
        return bool(bad)

    def args(self, model: str) -> tuple:
        """`_convert_one`'s arguments: with --check, the parents' fresh outputs go along."""
        fresh: dict[Path, str] = {}
        for parent in self.parents(model) if self.check else ():
            if parent in self.results and self.results[parent].outcome:
                fresh.update(self.results[parent].outcome.outputs)
        return self.layout.modular_file(model), self.layout, self.force, self.check, fresh

    def finish(self, model: str, outcome: Outcome) -> None:
        for path in outcome.written:
            print(f"{model}: wrote {path}")
        for line in outcome.problems:
            print(line, file=sys.stderr)
        if self.verbose and (trace := traceback_of(outcome)):
            print(trace.rstrip(), file=sys.stderr)
        self.results[model] = Converted(outcome)

    def serial(self, models: list[str]) -> None:
        for model in models:
            if not self.blocked(model):
                self.finish(model, _convert_one(*self.args(model)))

    def parallel(self, models: list[str], jobs: int) -> None:
        from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait  # only with workers

        pending = list(models)
        running: dict[Future, str] = {}
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            while pending or running:
                for model in [m for m in pending if self.ready(m, pending, running)]:
                    pending.remove(model)
                    if not self.blocked(model):
                        self.submit(pool, model, running)
                if not running:
                    continue
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    model = running.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as exc:  # noqa: BLE001 - a worker that died: this model failed, not the run
                        outcome = _internal_error(self.layout.modular_file(model), exc)
                    self.finish(model, outcome)

    def submit(self, pool, model: str, running: dict) -> None:
        from concurrent.futures.process import BrokenProcessPool

        try:
            running[pool.submit(_convert_one, *self.args(model))] = model
        except BrokenProcessPool as exc:  # a worker died (a crash in native code): what is left fails, clearly
            self.finish(model, _internal_error(self.layout.modular_file(model), exc))

    def ready(self, model: str, pending: list[str], running: dict) -> bool:
        return not any(p in pending or p in running.values() for p in self.parents(model))

    def summary(self) -> str:
        """`3 converted, 5 unchanged, 2 failed (child1: internal error; grand: parent child1 failed)`."""
        by_state: dict[str, list[str]] = {}
        for model, result in sorted(self.results.items()):
            by_state.setdefault(result.state(self.check), []).append(model)
        order = ("up to date", "stale", "failed") if self.check else ("converted", "unchanged", "failed")
        parts = [f"{len(by_state.get(state, []))} {state}" for state in order]
        if stale := by_state.get("stale"):
            parts[1] += f" ({', '.join(stale)})"
        if failed := by_state.get("failed"):
            parts[2] += " (" + "; ".join(f"{m}: {self.results[m].reason()}" for m in failed) + ")"
        line = "modbuild convert" + " --check" * self.check + ": " + ", ".join(parts)
        if not self.verbose and any(r.outcome and traceback_of(r.outcome) for r in self.results.values()):
            line += "; run with -v for the internal errors' tracebacks"
        return line


def run(
    models: list[str],
    tree: dict[str, Model],
    layout: Layout,
    jobs: int,
    force: bool,
    check: bool,
    verbose: bool = False,
    failed: dict[str, str] | None = None,
) -> int:
    """Convert `models` parents first, then print the summary line. `failed`: models already known to fail
    (model -> message, printed), whose children are not converted. Returns the number of models that failed
    (with --check: that are not up to date)."""
    job = Run(tree, layout, force, check, verbose)
    for model, message in (failed or {}).items():
        job.finish(model, Outcome(layout.modular_file(model), problems=[message]))
    pending = [m for m in parents_first(tree) if m in models and m not in job.results]
    if jobs <= 1:
        job.serial(pending)
    else:
        job.parallel(pending, jobs)
    print(job.summary())
    return sum(r.state(check) not in ("up to date", "converted", "unchanged") for r in job.results.values())


def _bad_path(path: Path) -> str | None:
    if not path.exists():
        return f"{path}: no such file or directory"
    if path.is_file() and not (path.name.startswith("modular_") and path.suffix == ".py"):
        return f"{path}: not a modular file (a modular file is named modular_<model>.py)"
    return None


def convert_command(args: argparse.Namespace) -> int:
    paths = [Path(p).resolve() for p in args.paths]
    if bad := [why for path in paths if (why := _bad_path(path))]:
        print("\n".join(bad), file=sys.stderr)
        return 1
    root = Path(args.root).resolve() if args.root else _tree_root(paths[0])
    layout = detect(root, args.out and Path(args.out).resolve(), args.package, args.layout)
    selected = _selected(paths, layout)
    models = discover(layout, strict=False, only=selected)
    layout = replace(layout, directories=tuple((m.name, m.directory) for m in models.values() if m.directory))
    wanted = sorted(models if selected is None else selected)
    if not wanted:
        print(f"{root}: no modular_<model>.py files in this tree (layout: {layout.style})", file=sys.stderr)
        return 1
    failed = {}
    for name in wanted:
        if name not in models:
            failed[name] = f"{layout.modular_file(name)}: no modular file for model '{name}'"
        elif models[name].error:
            failed[name] = models[name].error
    failures = run(wanted, models, layout, args.jobs, args.force, args.check, args.verbose, failed)
    return 1 if failures else 0


USAGE = """\
CONFIG (train, evaluate) is a YAML training config with the sections Global, Engine, Model (required), Data
(required), Optimizer and Distributed: configs/tiny_qwen2.yaml and configs/finetune_smollm2.yaml are ready ones;
`-o Section.key=value` overrides one key. `modbuild COMMAND --help` describes a command's options.
"""

CONFIG_HELP = (
    "CONFIG.yaml is a training config (YAML) with the sections Global, Engine, Model, Data, Optimizer and "
    "Distributed; configs/tiny_qwen2.yaml and configs/finetune_smollm2.yaml are ready ones."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="modbuild",
        description="modbuild: modular model files to standalone ones, and a training engine for them.",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    convert = sub.add_parser("convert", help="convert modular files to standalone modeling files")
    convert.add_argument("paths", nargs="+", metavar="PATH", help="modular_<m>.py files, model directories or a tree")
    convert.add_argument("--root", help="the directory holding the model directories (or modular/ and generated/)")
    convert.add_argument("--out", help="where generated model directories go (default: by layout)")
    convert.add_argument("--package", help="absolute import path of the models directory (default: from the tree)")
    convert.add_argument("--layout", choices=STYLES, help="the tree's layout (default: detected)")
    convert.add_argument("-j", "--jobs", type=int, default=1, help="convert up to N independent models at once")
    convert.add_argument("--check", action="store_true", help="write nothing; fail if any output would change")
    convert.add_argument(
        "--force", action="store_true", help="overwrite hand-edited, hand-written or other tools' generated files"
    )
    convert.add_argument("-v", "--verbose", action="store_true", help="print the traceback of an internal error")
    new = sub.add_parser("new", help="scaffold a model that starts as its parent under a new name")
    new.add_argument("model", help="the new model's name, e.g. my_llama")
    new.add_argument("--from", dest="parent", required=True, metavar="PARENT", help="the model it derives from")
    new.add_argument("--prefix", help="its class prefix (default: from the name, my_llama -> MyLlama)")
    new.add_argument("--root", default=".", help="the project root holding modular/ and generated/")
    report = sub.add_parser("report", help="verify reports: `report merge` joins the reports of CI shards")
    report_sub = report.add_subparsers(dest="report_command", required=True, metavar="ACTION")
    merge = report_sub.add_parser("merge", help="join `doit verify --shard K/N` reports into reports/verify.md/.json")
    merge.add_argument("inputs", nargs="+", type=Path, metavar="REPORT.json", help="each shard's reports/verify.json")
    merge.add_argument("--root", default=".", type=Path, help="the project whose reports/ receives the result")
    from modbuild.engine.cli import add_commands  # imports no paddle until a command runs

    add_commands(sub)
    for name in ("train", "evaluate"):
        sub.choices[name].description = CONFIG_HELP
    args = parser.parse_args(argv)
    if args.command in ("train", "evaluate"):
        from modbuild.engine.cli import run as run_engine

        return run_engine(args.command, args.config, args.override)
    if args.command == "report":
        from modbuild.report_merge import merge_command

        return merge_command(args.root, args.inputs)
    try:
        return convert_command(args) if args.command == "convert" else new_command(args)
    except GraphError as exc:
        print(exc, file=sys.stderr)
        return 1


def new_command(args: argparse.Namespace) -> int:
    from modbuild.scaffold import ScaffoldError, scaffold

    try:
        written = scaffold(Path(args.root), args.model, args.parent, args.prefix)
    except ScaffoldError as exc:
        print(exc, file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    print(f"next: doit convert:{args.model} verify --model {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
