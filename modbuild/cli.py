"""`modbuild convert PATH...`: convert the modular files of any tree, without doit; `modbuild new`: a new model;
`modbuild train|evaluate CONFIG.yaml`: the training engine (`modbuild.engine.cli`).

PATH is a modular file, a model directory, or a whole tree. The layout is read from the tree
(`modbuild.layout`): this repository's `modular/` + `generated/`, HF transformers' `models/<m>/`, or
PaddleNLP's `transformers/<m>/`. Models convert parents first (the same import graph doit uses);
with `-j N`, models whose parents are done convert in parallel. No ML framework is imported.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
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


def _convert_one(modular: Path, layout: Layout, force: bool, check: bool) -> Outcome:
    outcome = build_model(modular, layout, force=force, check=check)
    outcome.outputs = {}  # the text stays in the worker: only what happened is sent back
    return outcome


def _report(model: str, outcome: Outcome) -> None:
    for path in outcome.written:
        print(f"{model}: wrote {path}")
    for line in outcome.problems:
        print(line, file=sys.stderr)


def run(models: list[str], tree: dict[str, Model], layout: Layout, jobs: int, force: bool, check: bool) -> int:
    """Convert `models` parents first; a model whose parent failed is not converted. Returns the failures."""
    failed: set[str] = set()
    pending = [m for m in parents_first(tree) if m in models]

    def parents(model: str) -> set[str]:
        return set(tree[model].parents) & tree.keys()

    def ready(model: str, done: set[str]) -> bool:
        return all(p in done or p not in pending for p in parents(model))

    def finish(model: str, outcome: Outcome) -> None:
        _report(model, outcome)
        if not outcome.ok:
            failed.add(model)

    def blocked(model: str) -> bool:
        if bad := sorted(parents(model) & failed):
            print(f"{layout.modular_file(model)}: not converted: parent {', '.join(bad)} failed", file=sys.stderr)
            failed.add(model)
            return True
        return False

    if jobs <= 1:
        for model in pending:
            if not blocked(model):
                finish(model, build_model(layout.modular_file(model), layout, force=force, check=check))
        return len(failed)
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait  # only with workers

    done: set[str] = set()
    running: dict[Future, str] = {}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            for model in [m for m in pending if ready(m, done)]:
                pending.remove(model)
                if blocked(model):
                    done.add(model)
                    continue
                running[pool.submit(_convert_one, layout.modular_file(model), layout, force, check)] = model
            if not running:
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                model = running.pop(future)
                finish(model, future.result())
                done.add(model)
    return len(failed)


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
    failures = 0
    for name in wanted:
        if name not in models:
            print(f"{layout.modular_file(name)}: no modular file for model '{name}'", file=sys.stderr)
            failures += 1
        elif models[name].error:
            print(models[name].error, file=sys.stderr)
            failures += 1
    convertible = [m for m in wanted if m in models and not models[m].error]
    failures += run(convertible, models, layout, args.jobs, args.force, args.check)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modbuild", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
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
    new = sub.add_parser("new", help="scaffold a model that starts as its parent under a new name")
    new.add_argument("model", help="the new model's name, e.g. my_llama")
    new.add_argument("--from", dest="parent", required=True, metavar="PARENT", help="the model it derives from")
    new.add_argument("--prefix", help="its class prefix (default: from the name, my_llama -> MyLlama)")
    new.add_argument("--root", default=".", help="the project root holding modular/ and generated/")
    from modbuild.engine.cli import add_commands  # imports no paddle until a command runs

    add_commands(sub)
    args = parser.parse_args(argv)
    if args.command in ("train", "evaluate"):
        from modbuild.engine.cli import run as run_engine

        return run_engine(args.command, args.config, args.override)
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
