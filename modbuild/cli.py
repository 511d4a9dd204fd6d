"""`modbuild convert FILE...`: convert modular files of any package tree, without doit.

Two layouts are supported:
- this repository's: `modular/<m>/modular_<m>.py` -> `generated/<m>/`, parents imported from
  `generated.<p>.modeling_<p>` (`--root` is the directory holding `modular/` and `generated/`);
- HF transformers': `models/<m>/modular_<m>.py` -> `models/<m>/modeling_<m>.py` beside it, parents
  imported as `..<p>.modeling_<p>` or `<package>.<p>.modeling_<p>` (`--root models --out models`).

Files are converted parents first, so a parent produced in the same run is used by its children.
No ML framework is imported: conversion is pure source transformation.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import networkx as nx

from modbuild.atomic import atomic_write
from modbuild.convert import ConvertError, Layout, convert_file, model_of
from modbuild.graph import GraphError, parent_of_import
from modbuild.header import is_hand_edited


def _layout(files: list[Path], root: Path | None, out: Path | None, package: str) -> Layout:
    if root is None:
        root = files[0].parent.parent
        if root.name == "modular":
            root = root.parent
    if (root / "modular").is_dir():
        return Layout(root / "modular", out or root / "generated", package)
    return Layout(root, out or root, package)  # HF-style: outputs beside the modular files


def _order(files: list[Path], package: str) -> list[Path]:
    """Parents before children, by the models each file imports."""
    by_model = {model_of(f): f for f in files}
    graph = nx.DiGraph()
    graph.add_nodes_from(by_model)
    for model, path in by_model.items():
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except SyntaxError:
            continue  # the converter reports it with path:line
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph.add_edges_from(
                    (p, model) for p in parent_of_import(node, package) if p in by_model and p != model
                )
    try:
        return [by_model[m] for m in nx.lexicographical_topological_sort(graph)]
    except nx.NetworkXUnfeasible:
        cycle = " -> ".join(a for a, _ in nx.find_cycle(graph))
        raise GraphError(f"import cycle between modular files: {cycle}") from None


def convert_command(args: argparse.Namespace) -> int:
    files = [Path(f).resolve() for f in args.files]
    layout = _layout(
        files, args.root and Path(args.root).resolve(), args.out and Path(args.out).resolve(), args.package
    )
    failed = 0
    for path in _order(files, args.package):
        try:
            outputs = convert_file(path, layout)
        except (ConvertError, OSError) as exc:
            print(exc, file=sys.stderr)
            failed += 1
            continue
        for target, text in outputs.items():
            if target.exists() and is_hand_edited(target.read_text()) and not args.force:
                print(f"{target}: edited by hand; not overwritten (use --force)", file=sys.stderr)
                failed += 1
                continue
            if args.check:
                if not target.exists() or target.read_text() != text:
                    print(f"{target}: differs from a fresh conversion", file=sys.stderr)
                    failed += 1
            elif not target.exists() or target.read_text() != text:
                atomic_write(target, text)
                print(f"wrote {target}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modbuild", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="convert modular files to standalone modeling files")
    convert.add_argument("files", nargs="+", help="modular_<model>.py files")
    convert.add_argument("--root", help="tree root (holds modular/ and generated/, or the models/ directory)")
    convert.add_argument("--out", help="where generated model directories go (default: by layout)")
    convert.add_argument("--package", default="generated", help="absolute import prefix of parent models")
    convert.add_argument("--check", action="store_true", help="write nothing; fail if any output would change")
    convert.add_argument("--force", action="store_true", help="overwrite generated files edited by hand")
    args = parser.parse_args(argv)
    try:
        return convert_command(args)
    except GraphError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
