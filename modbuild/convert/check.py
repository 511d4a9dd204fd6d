"""Checks that a conversion says what its modular file says: refuse, naming `path:line`, what would otherwise be
written as "ok" and fail only later (an empty file, a class defined twice, a model that is its own parent, a
star import of another model's code) or at import time (a name the output reads and nothing defines, an
import of another model in a tree whose generated files promise to import none).
"""

from __future__ import annotations

import ast
import builtins
import re
import symtable
import warnings
from collections.abc import Iterable

import libcst as cst
from libcst.helpers import get_full_name_for_node

from modbuild.convert.nodes import is_docstring, is_name, single
from modbuild.convert.scopes import outer_names
from modbuild.convert.source import ConvertError, ModularWarning, SourceModule
from modbuild.layout import Layout

# Names every module (or class body) has without binding them.
_MODULE_NAMES = frozenset(
    {"__name__", "__file__", "__doc__", "__spec__", "__loader__", "__package__", "__builtins__", "__path__"}
    | {"__annotations__", "__module__", "__qualname__"}
)
_KNOWN = frozenset(dir(builtins)) | _MODULE_NAMES
_STAR = re.compile(r"\bimport\s*\*")


def check_empty(child: SourceModule) -> None:
    """A modular file with nothing but imports would give an empty modeling file (and lose a configuration file)."""
    if not any(not u.is_import and u.names != ("__all__",) for u in child.units) and all(
        is_docstring(stmt) for stmt, _, _ in child.loose
    ):
        raise ConvertError(
            child.path, 1, "empty modular file: it defines no class or function, so there is nothing to generate"
        )


def check_child(child: SourceModule, layout: Layout, model: str) -> None:
    """What is wrong with the modular file itself, before its parents are read."""
    _check_twice(child)
    for stmt, _, line in child.loose:
        star = single(stmt)
        if isinstance(star, cst.ImportFrom) and isinstance(star.names, cst.ImportStar):
            target = _target(star, layout, child.path.parent.name)
            if target is not None:
                raise ConvertError(
                    child.path,
                    line,
                    f"`from {_module(star)} import *`: a star import of model '{target.model}' would be copied "
                    "as it is, and the generated file would import another model; import the names you use",
                )
    for unit in child.units:
        stmt = single(unit.node)
        if isinstance(stmt, (cst.Import, cst.ImportFrom)) and unit.names:
            targets = _targets(stmt, layout, child.path.parent.name)
            if model in targets:
                raise ConvertError(
                    child.path,
                    unit.line,
                    f"model '{model}' imports its own generated code ({_module(stmt)}): a model cannot be its own "
                    "parent; define the names in the modular file, or import them from the parent model",
                )


def _check_twice(child: SourceModule) -> None:
    """A class defined twice: Python keeps the last, and so does HF's converter (HF 5.x got_ocr2 redefines its
    PreTrainedModel): the earlier one is dropped, with a warning. A function defined twice is an error."""
    first: dict[str, int] = {}
    earlier: dict[str, object] = {}
    for unit in list(child.units):
        node = unit.node
        if not isinstance(node, (cst.ClassDef, cst.FunctionDef)):
            continue
        if isinstance(node, cst.FunctionDef) and any(
            is_name(d.decorator, "overload") or get_full_name_for_node(d.decorator) == "typing.overload"
            for d in node.decorators
        ):
            continue  # typing.overload: defined several times on purpose
        name = node.name.value
        if name in first and isinstance(node, cst.ClassDef):
            warnings.warn_explicit(
                f"class '{name}' is defined twice (lines {first[name]} and {unit.line}): the last one is kept, as "
                "Python and HF keep it",
                ModularWarning,
                str(child.path),
                unit.line,
            )
            child.units.remove(earlier[name])
        elif name in first:
            what = "class" if isinstance(node, cst.ClassDef) else "function"
            raise ConvertError(
                child.path,
                unit.line,
                f"{what} '{name}' is defined twice (lines {first[name]} and {unit.line}); keep one definition",
            )
        first[name], earlier[name] = unit.line, unit


def _module(stmt: cst.Import | cst.ImportFrom) -> str:
    if isinstance(stmt, cst.Import):
        return ", ".join(get_full_name_for_node(a.name) or "" for a in stmt.names)
    dots = "." * len(stmt.relative)
    return dots + (get_full_name_for_node(stmt.module) if stmt.module else "")


def _target(stmt: cst.ImportFrom, layout: Layout, within: str):
    module = get_full_name_for_node(stmt.module) if stmt.module else None
    return layout.target(module, len(stmt.relative), within)


def _targets(stmt: cst.Import | cst.ImportFrom, layout: Layout, within: str) -> set[str]:
    """The models an import statement imports code of."""
    if isinstance(stmt, cst.ImportFrom):
        found = _target(stmt, layout, within)
        return {found.model} if found else set()
    found = set()
    for alias in stmt.names:
        dotted = get_full_name_for_node(alias.name) or ""
        for module in (dotted, dotted.rpartition(".")[0]):  # `import generated.llama.modeling_llama` or a package
            if module and (target := layout.target(module, 0, within)) is not None:
                found.add(target.model)
                break
    return found


def check_imports(path, layout: Layout, model: str, imports: Iterable[tuple[cst.CSTNode, int, str | None]]) -> None:
    """In this repository's layout a generated file imports no other model (README): refuse one that would.
    `imports` are (statement, line in the modular file or 0, the parent model whose code brought it in)."""
    if layout.style != "repo":
        return  # HF and PaddleNLP trees import their sibling packages (`from ..llama import fusion_ops`)
    for node, line, origin in imports:
        stmt = single(node)
        if not isinstance(stmt, (cst.Import, cst.ImportFrom)):
            continue
        others = sorted(_targets(stmt, layout, model) - {model})
        if others:
            via = f", brought in by model '{origin}''s code" if origin else ""
            raise ConvertError(
                path,
                line or 1,
                f"the generated file would import model '{others[0]}' ({_module(stmt)}{via}): generated code "
                "imports no other model; import a modeling or configuration module's names, which are flattened",
            )


def undefined_names(code: str) -> dict[str, tuple[int, str | None]]:
    """Module-level names the code reads and nothing binds (nor a builtin): name -> (line, scope) of the first
    read; for a read inside a function or class, its scope's name and the line of its `def`/`class` (None and
    the line itself at module level). Empty when the module star-imports (anything could be defined then)."""
    if _STAR.search(code) and any(
        isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in ast.walk(ast.parse(code))
    ):
        return {}
    top = symtable.symtable(code, "<generated>", "exec")
    bound = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    reads: dict[str, list[tuple[int, str | None]]] = {s.get_name(): [] for s in top.get_symbols() if s.is_referenced()}
    todo = list(top.get_children())
    while todo:
        table = todo.pop()
        todo += table.get_children()
        for symbol in table.get_symbols():
            if symbol.is_declared_global() and symbol.is_assigned():
                bound.add(symbol.get_name())  # `global x; x = ...` in a function binds x in the module
            elif symbol.is_global() and symbol.is_referenced():
                reads.setdefault(symbol.get_name(), []).append((table.get_lineno(), table.get_name()))
    missing = set(reads) - bound - _KNOWN
    if not missing:
        return {}
    module_level = {s.get_name() for s in top.get_symbols() if s.is_referenced()} & missing
    for stmt in ast.parse(code).body if module_level else ():  # read at module level: the statements that do
        for name in outer_names(stmt) & module_level:
            reads[name].append((stmt.lineno, None))
    return {name: min(reads[name], key=lambda read: read[0]) for name in missing if reads[name]}


def check_names(child: SourceModule, outputs: dict) -> None:
    """A name the generated code reads that nothing defines (`class Qwen2MLP(Missing)`, a lost `self`) would fail
    at import time or when the code runs: refuse it, naming the line of the modular file that reads it."""
    _check_sibling_imports(child, outputs)
    for out, code in outputs.items():
        missing = undefined_names(code)
        if not missing:
            continue
        name = min(missing, key=lambda n: missing[n][0])
        out_line, scope = missing[name]
        definition = _definition_at(code, out_line)
        line, inherited = _child_line(child, definition, scope, name)
        where = f" (in code {definition or 'it'} inherits; {out.name} line {out_line})" if inherited else ""
        raise ConvertError(child.path, line, f"name '{name}' is not defined{where}")


def _definition_at(code: str, line: int) -> str | None:
    """The name of the top-level class or function of `code` that spans `line`."""
    for node in ast.parse(code).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if start <= line <= (node.end_lineno or node.lineno):
                return node.name
    return None


def _child_line(child: SourceModule, definition: str | None, scope: str | None, name: str) -> tuple[int, bool]:
    """(line of the modular file, whether the read comes from inherited code): the first read of `name` in the
    child's definition (in its function `scope` when it has one), or anywhere for a module-level read; else the
    definition's own line."""
    tree = ast.parse(child.module.code)
    nodes = [n for n in tree.body if getattr(n, "name", None) == definition] if definition else tree.body
    inner = [n for top in nodes for n in ast.walk(top) if getattr(n, "name", None) == scope and n is not top]
    for where in (inner, nodes):
        lines = [n.lineno for top in where for n in ast.walk(top) if isinstance(n, ast.Name) and n.id == name]
        if lines:
            return min(lines), False
        if where:  # the child defines that scope, but the read comes from the parent's code merged into it
            return where[0].lineno, True
    return 1, True


def _check_sibling_imports(child: SourceModule, outputs: dict) -> None:
    """`from .configuration_x import XConfig` in one output must find XConfig in the configuration file the same
    conversion writes (it replaces the file that defined it, such as a hand-written one beside the modular file)."""
    defined = {}
    for out, code in outputs.items():
        top = symtable.symtable(code, str(out), "exec")
        defined[out.stem] = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    for out, code in outputs.items():
        for node in ast.parse(code).body:
            if not (isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in defined):
                continue
            for alias in node.names:
                if alias.name not in defined[node.module]:
                    raise ConvertError(
                        child.path,
                        _import_line(child, alias.name),
                        f"'{alias.name}' would be imported from {node.module}.py, but the {node.module}.py this "
                        "conversion writes does not define it",
                    )


def _import_line(child: SourceModule, name: str) -> int:
    """The line of the modular file's import of `name`, else 1."""
    for node in ast.walk(ast.parse(child.module.code)):
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            return node.lineno
    return 1
