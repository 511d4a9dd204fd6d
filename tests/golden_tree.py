"""Helpers for golden converter cases: a case is a small tree `tests/golden/<case>/modular/...`."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
import types
from pathlib import Path

from modbuild.convert import convert_file
from modbuild.layout import Layout
from modbuild.graph import load

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "modular").is_dir())


def convert_tree(case: str, tmp: Path) -> tuple[Path, dict[str, dict[str, str]]]:
    """Copy a case into `tmp/<pkg>/`, convert every model in graph order, write the outputs there.

    The tree sits inside a uniquely named package so its `generated` package never clashes with
    this repository's.
    """
    root = tmp / f"golden_{case}"
    shutil.copytree(GOLDEN / case / "modular", root / "modular")
    (root / "generated").mkdir()
    for init in (root / "__init__.py", root / "generated" / "__init__.py"):
        init.write_text("")
    models, graph = load(root / "modular")
    layout = Layout(root / "modular", root / "generated")
    results: dict[str, dict[str, str]] = {}
    import networkx as nx

    for model in nx.lexicographical_topological_sort(graph):
        outputs = convert_file(root / "modular" / model / f"modular_{model}.py", layout)
        (root / "generated" / model).mkdir()
        (root / "generated" / model / "__init__.py").write_text("")
        for path, text in outputs.items():
            path.write_text(text)
        results[model] = {path.name: text for path, text in outputs.items()}
    return root, results


def import_generated(root: Path, model: str) -> types.SimpleNamespace:
    """The names of a generated model's modeling and configuration modules, together."""
    if str(root.parent) not in sys.path:
        sys.path.insert(0, str(root.parent))
    names = {}
    for kind in ("configuration", "modeling"):
        if (root / "generated" / model / f"{kind}_{model}.py").is_file():
            names.update(vars(importlib.import_module(f"{root.name}.generated.{model}.{kind}_{model}")))
    return types.SimpleNamespace(**names)


def scenario(case: str):
    spec = importlib.util.spec_from_file_location(f"scenario_{case}", GOLDEN / case / "scenario.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
