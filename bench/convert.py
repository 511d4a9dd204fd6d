"""Converter speed: CPU time per modular file divided by the time to `libcst.parse_module` its inputs.

The inputs of one conversion are the modular file and every parent file it reads. The goal is a
ratio of at most 3 (HF's modular converter spends about 20x parsing time). Each run converts in
a fresh process-level cache state, as `doit -n N` workers do on their first task.

    python bench/convert.py [--repeat 5] [--classes 40] [--large 200,600,1800]

`--large`: one big root file at each size (classes), to show that conversion time grows linearly with the
file (it was quadratic: a 3x larger file took 10x longer).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

import libcst

from modbuild.convert import convert_file
from modbuild.layout import Layout
from modbuild.convert.source import _cached
from modbuild.project import Project

ROOT = Path(__file__).resolve().parents[1]


def _inputs(path: Path, layout: Layout) -> list[Path]:
    import ast

    from modbuild.graph import parent_of_import

    parents = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            parents.update(parent_of_import(node, layout, path.parent.name))
    files = [path]
    for parent in sorted(parents):
        files += [f for kind in ("modeling", "configuration") if (f := layout.file(parent, kind)).is_file()]
    return files


def _cpu() -> float:
    """This process's CPU time plus its finished children's (the ruff formatter runs as one)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def measure(path: Path, layout: Layout, repeat: int) -> tuple[float, float]:
    """(convert seconds, parse seconds), CPU time, best of `repeat`."""
    files = _inputs(path, layout)
    texts = [f.read_text() for f in files]
    convert, parse = [], []
    for _ in range(repeat):
        _cached.cache_clear()
        start = _cpu()
        convert_file(path, layout)
        convert.append(_cpu() - start)
        start = time.process_time()
        for text in texts:
            libcst.parse_module(text)
        parse.append(time.process_time() - start)
    return min(convert), min(parse)


def synthetic_family(root: Path, classes: int) -> list[Path]:
    """A root with `classes` classes and helpers, and a child overriding every fifth class."""
    body = ["import math", ""]
    for i in range(classes):
        body.append(
            textwrap.dedent(f'''
            def helper_{i}(x):
                return math.sqrt(abs(x)) + {i}


            class BaseBlock{i}:
                """Block {i}."""

                scale = {i}

                def __init__(self, config, layer_idx=0):
                    self.config = config
                    self.layer_idx = layer_idx
                    self.inner = BaseBlock{max(i - 1, 0)}(config) if {i} else None

                def forward(self, x):
                    values = [helper_{i}(v) * self.scale for v in x]
                    return sum(values) + (self.inner.forward(x) if self.inner else 0)
            ''')
        )
    child = [
        f"from generated.base.modeling_base import {', '.join(f'BaseBlock{i}' for i in range(0, classes, 5))}",
        "",
    ]
    for i in range(0, classes, 5):
        child.append(
            textwrap.dedent(f"""
            class DerivedBlock{i}(BaseBlock{i}):
                def __init__(self, config, layer_idx=0):
                    super().__init__(config, layer_idx)
                    self.bias = {i}

                def forward(self, x):
                    out = super().forward(x)
                    return out + self.bias
            """)
        )
    files = {"modular/base/modular_base.py": "\n".join(body), "modular/derived/modular_derived.py": "\n".join(child)}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return [root / rel for rel in files]


def report(label: str, rows: list[tuple[str, float, float]]) -> None:
    print(f"\n{label}")
    print(f"{'file':<28}{'convert ms':>12}{'parse ms':>10}{'ratio':>8}")
    for name, conv, parse in rows:
        print(f"{name:<28}{conv * 1e3:>12.1f}{parse * 1e3:>10.1f}{conv / parse:>8.2f}")
    ratios = [c / p for _, c, p in rows]
    print(
        f"median ratio {statistics.median(ratios):.2f}  (total {sum(c for _, c, _ in rows) / sum(p for _, _, p in rows):.2f})"
    )


def large_files(sizes: list[int], repeat: int) -> None:
    """CPU time per 1,000 lines for one synthetic root file of each size: flat when conversion is linear."""
    print(f"\nlarge files\n{'classes':>8}{'lines':>8}{'convert s':>11}{'ms / 1k lines':>15}{'ratio':>8}")
    for classes in sizes:
        tmp = Path(tempfile.mkdtemp())
        try:
            base, _ = synthetic_family(tmp, classes)
            lines = len(base.read_text().splitlines())
            conv, parse = measure(base, Layout(tmp / "modular", tmp / "generated"), repeat)
            print(f"{classes:>8}{lines:>8}{conv:>11.2f}{conv * 1e6 / lines:>15.1f}{conv / parse:>8.2f}")
        finally:
            shutil.rmtree(tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--large", default="200,600,1800", help="classes of the large-file sizes ('' to skip)")
    args = parser.parse_args()
    project = Project(ROOT)
    rows = []
    for model in project.build_order():
        conv, parse = measure(project.modular_file(model), project.layout, args.repeat)
        rows.append((model, conv, parse))
    report("repository models", rows)

    tmp = Path(tempfile.mkdtemp())
    try:
        base, derived = synthetic_family(tmp, args.classes)
        layout = Layout(tmp / "modular", tmp / "generated")
        for path in (base, derived):
            for out, text in convert_file(path, layout).items():
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(text)
        rows = [(p.name, *measure(p, layout, args.repeat)) for p in (base, derived)]
        report(f"synthetic family ({args.classes} classes)", rows)
    finally:
        shutil.rmtree(tmp)
    large_files([int(n) for n in args.large.split(",") if n], max(1, args.repeat // 5))


if __name__ == "__main__":
    main()
