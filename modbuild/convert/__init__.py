"""The modular converter: flatten one modular file into standalone modeling/configuration files.

Passes, one module each: `resolve` (parents), `collect` (namespace + dependency closure, using
`merge`/`supercall` for classes and `rename` for parent nodes), `emit` (order, imports, format).
No ML framework is imported: this is pure source transformation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import libcst as cst
import libcst.matchers as m

from modbuild.convert.collect import Namespace
from modbuild.convert.emit import render, ruff_format
from modbuild.convert.resolve import Layout, load_parents
from modbuild.convert.source import ConvertError, SourceModule, load_source
from modbuild.header import with_header

__all__ = ["ConvertError", "Layout", "convert_file", "model_of"]

Reader = Callable[[Path], "str | None"]


def model_of(path: Path) -> str:
    stem = Path(path).stem
    if not stem.startswith("modular_"):
        raise ConvertError(path, 1, "a modular file must be named modular_<model>.py")
    return stem[len("modular_") :]


def _has_future_annotations(module: SourceModule) -> bool:
    future = m.SimpleStatementLine([m.ImportFrom(module=m.Name("__future__"))])
    return any(m.matches(stmt, future) for stmt in module.module.body)


def convert_file(path: Path, layout: Layout, read: Reader | None = None) -> dict[Path, str]:
    """The generated files for one modular file, as {output path: text}. Nothing is written.

    `read` supplies file contents (for a check against freshly converted parents); by default
    files are read from disk.
    """
    path = Path(path)
    model = model_of(path)
    text = read(path) if read else None
    child = load_source(path, text)
    prefix, parents, imports = load_parents(child, model, layout, read)
    ns = Namespace(child, prefix, parents, imports)
    units, _ = ns.closure(ns.child_roots)
    units = [u for u in units if u.names != ("annotations",)]
    config_roots = [u for u in units if u.is_config]
    config_units, _ = ns.closure(config_roots)
    config_ids = {u.uid for u in config_units if not u.is_import}
    model_units, crossing = ns.closure([u for u in ns.child_roots if u.uid not in config_ids], stop=config_ids)
    future = any(_has_future_annotations(m) for m in [child, *(mod for p in parents for mod in p.modules.values())])
    sources = [_rel(path, layout)] + [_rel(mod.path, layout) for p in parents for mod in p.modules.values()]
    outputs = {}
    if config_units:
        kind = f"configuration_{model}"
        outputs[layout.output_file(model, "configuration")] = render(config_units, {}, future, prefix.camel)
        cross = {kind: sorted(crossing)} if crossing else {}
    else:
        cross = {}
    doc = _docstring(child)
    outputs[layout.output_file(model, "modeling")] = render(model_units, cross, future, prefix.camel, doc)
    return {out: with_header(ruff_format(code, out.name), sources) for out, code in outputs.items()}


def _docstring(module: SourceModule) -> str:
    """The modular file's docstring, which describes the model: it heads the modeling file too."""
    body = module.module.body
    if body and m.matches(body[0], m.SimpleStatementLine([m.Expr(m.SimpleString() | m.ConcatenatedString())])):
        return cst.Module([]).code_for_node(body[0]).strip()
    return ""


def _rel(path: Path, layout: Layout) -> str:
    base = layout.generated_root.resolve().parent
    try:
        return Path(os.path.relpath(Path(path).resolve(), base)).as_posix()
    except ValueError:
        return Path(path).name
