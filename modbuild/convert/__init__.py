"""The modular converter: flatten one modular file into standalone modeling/configuration files.

Passes, one module each: `resolve` (parents), `collect` (namespace + dependency closure, using
`merge`/`supercall` for classes and `rename` for parent nodes), `emit` (order, imports, format).
No ML framework is imported: this is pure source transformation.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import libcst as cst

from modbuild.convert.check import check_child, check_empty, check_imports, check_names
from modbuild.convert.collect import Namespace, collect
from modbuild.convert.emit import FormatError, render, ruff_format
from modbuild.convert.nodes import is_docstring, is_name, single
from modbuild.convert.resolve import load_parents
from modbuild.convert.source import ConvertError, InternalError, SourceModule, load_source, read_with
from modbuild.header import with_header
from modbuild.layout import Layout, kind_order

__all__ = ["ConvertError", "FormatError", "InternalError", "Layout", "convert_file", "model_of"]

_DEFINITIONS = (cst.ClassDef, cst.FunctionDef)
Reader = Callable[[Path], "str | None"]


def model_of(path: Path) -> str:
    stem = Path(path).stem
    if not stem.startswith("modular_"):
        raise ConvertError(path, 1, "a modular file must be named modular_<model>.py")
    return stem[len("modular_") :]


def _has_future_annotations(module: SourceModule) -> bool:
    return any(
        isinstance(inner := single(stmt), cst.ImportFrom) and is_name(inner.module, "__future__")
        for stmt in module.module.body
    )


def convert_file(path: Path, layout: Layout, read: Reader | None = None) -> dict[Path, str]:
    """The generated files for one modular file, as {output path: text}. Nothing is written.

    `read` supplies file contents (for a check against freshly converted parents); by default
    files are read from disk.
    """
    with _no_cycle_collection():
        try:
            return _convert(Path(path), layout, read)
        except (ConvertError, FormatError, OSError):
            raise
        except Exception as exc:  # a bug of ours, outside any one definition: the model fails, named
            raise InternalError(path, 1, exc) from exc


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Syntax trees are many small acyclic objects: the cyclic collector only rescans them (a fifth of the
    time of a tree's conversion), and reference counting frees them anyway."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()  # what is still alive (parsed parents, cached for the next model) is not rescanned either
        if enabled:
            gc.enable()


def _convert(path: Path, layout: Layout, read: Reader | None) -> dict[Path, str]:
    model = model_of(path)
    child = load_source(path, read_with(read, path))
    check_child(child, layout, model)
    prefix, parents, imports = load_parents(child, model, layout, read)
    check_empty(child)
    ns = collect(child, prefix, parents, imports)
    parent_modules = [mod for p in parents for mod in p.modules.values()]
    future = any(_has_future_annotations(mod) for mod in [child, *parent_modules])
    sources = [_rel(path, layout)] + [_rel(mod.path, layout) for mod in parent_modules]
    outputs = {}
    for kind, units, cross in split_by_kind(ns):
        check_imports(path, layout, model, [(u.node, u.key.line, u.origin) for u in units if u.is_import])
        cross_imports = {layout.stem(model, k): names for k, names in cross.items()}
        doc = _docstring(child) if kind == "modeling" else ""
        outputs[layout.file(model, kind)] = render(units, cross_imports, future, prefix.camel, doc)
    check_names(child, outputs)
    return {out: with_header(ruff_format(code, str(out)), sources) for out, code in outputs.items()}


def split_by_kind(ns: Namespace) -> list[tuple[str, list, dict[str, list[str]]]]:
    """(kind, units, {earlier kind: names imported from it}) per output file, configuration first.

    Every class goes to the file of its kind (`Qwen2Config` -> configuration); functions and constants
    go with the definitions that use them. A later file imports the classes of an earlier one, and
    anything at all from the configuration file, instead of repeating them."""
    reachable, _ = ns.closure(ns.child_roots)
    reachable = [u for u in reachable if u.names != ("annotations",)]
    kinds = sorted({u.kind for u in reachable if u.is_class} | {"modeling"}, key=kind_order)
    owner: dict[int, str] = {}  # uid -> kind of the earlier file that holds (and exports) the unit
    files, emitted = [], set()
    for kind in kinds:
        if kind == "modeling":
            roots = [u for u in ns.child_roots if u.uid not in emitted]
        else:
            roots = [u for u in reachable if u.is_class and u.kind == kind]
        units, crossing = ns.closure(roots, stop=set(owner), kind=kind)
        cross: dict[str, list[str]] = {}
        for name, uid in sorted(crossing.items()):
            cross.setdefault(owner[uid], []).append(name)
        if kind == "modeling" and files and not any(isinstance(u.node, _DEFINITIONS) for u in units):
            continue  # no class or function is left for a modeling file (a processor-only modular file)
        files.append((kind, units, cross))
        emitted |= {u.uid for u in units}
        owner |= {u.uid: kind for u in units if not u.is_import and (u.is_class or kind == "configuration")}
    return files


def _docstring(module: SourceModule) -> str:
    """The modular file's docstring, which describes the model: it heads the modeling file too."""
    body = module.module.body
    if body and is_docstring(body[0]):
        return cst.Module([]).code_for_node(body[0]).strip()
    return ""


def _rel(path: Path, layout: Layout) -> str:
    base = layout.generated_root.resolve().parent
    try:
        return Path(os.path.relpath(Path(path).resolve(), base)).as_posix()
    except ValueError:
        return Path(path).name
