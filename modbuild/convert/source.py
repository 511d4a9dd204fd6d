"""Parse a Python file once and index its top-level definitions ("units") with their dependencies.

Dependencies are the module-level (or builtin) names a unit reads, from the compiler's own scope
analysis (`scopes`): locals, parameters, attributes, keyword names and comprehension variables
are never mistaken for dependencies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import libcst as cst
from libcst.helpers import get_full_name_for_node
from libcst.metadata import MetadataWrapper, PositionProvider

from modbuild.convert.nodes import class_body, is_docstring, single
from modbuild.convert.scopes import Reads, statement_reads
from modbuild.graph import own_hand_written
from modbuild.layout import BOM, Layout, SourceDecodeError, decode_error, is_sibling_module, read_source


class ConvertError(Exception):
    """An error in a modular or parent file, reported as `path:line: message`."""

    def __init__(self, path: Path | str, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line = Path(path), line


class InternalError(ConvertError):
    """A bug in the converter met while converting one file: reported as `path:line: internal error: ...` for the
    model (the line of the definition being converted, else 1); the original exception is its `__cause__`."""

    def __init__(self, path: Path | str, line: int, exc: BaseException):
        super().__init__(path, line, f"internal error: {type(exc).__name__}: {exc} (a bug in modbuild's converter)")


class ModularWarning(UserWarning):
    """A construct whose HF meaning, which the converter follows, differs from what plain Python would do."""


@dataclass
class Member:
    """One statement of a class body, keyed for overriding (`forward`, `x.setter`, `__doc__`)."""

    key: str | None
    node: cst.BaseStatement
    deps: frozenset[str]
    text: str | None = None  # its source, when known: lets renaming skip members without the prefix


@dataclass
class Unit:
    """A top-level statement that binds names; imports are split into one unit per bound name."""

    names: tuple[str, ...]
    node: cst.BaseStatement
    is_import: bool
    deps: frozenset[str]  # names read anywhere in the unit
    eager: frozenset[str]  # names read when the module is executed (bases, decorators, class attrs)
    line: int
    members: list[Member] = field(default_factory=list)
    text: str | None = None  # its source, when known

    @property
    def is_class(self) -> bool:
        return isinstance(self.node, cst.ClassDef)


@dataclass
class SourceModule:
    path: Path
    module: cst.Module
    units: list[Unit]
    loose: list[tuple[cst.BaseStatement, frozenset[str], int]]  # statements binding nothing
    import_names: frozenset[str]
    _positions: dict | None = None
    kernels: frozenset[str] = frozenset()  # functions registered as hub kernels under their own name

    @property
    def unrenamed(self) -> frozenset[str]:
        """Names a child takes from this module as they are: what it imports, and its hub kernel functions
        (`@use_kernel_func_from_hub_with_fallback(...) def mamba2_chunk_scan`: HF 5.x keeps `mamba2_chunk_scan` in
        bamba, where the prefix rule would make it `bamba_chunk_scan`)."""
        return self.import_names | self.kernels

    def line_of(self, node: cst.CSTNode) -> int:
        """A node's line, for error messages: positions are computed on first use only."""
        if self._positions is None:
            self._positions = MetadataWrapper(self.module, unsafe_skip_copy=True).resolve(PositionProvider)
        position = self._positions.get(node)
        return position.start.line if position else 0

    def definitions(self) -> dict[str, Unit]:
        return {name: unit for unit in self.units if not unit.is_import for name in unit.names}


def member_key(node: cst.BaseStatement) -> str | None:
    if isinstance(node, cst.FunctionDef):
        for decorator in node.decorators:
            dec = decorator.decorator
            if isinstance(dec, cst.Attribute) and dec.attr.value in ("setter", "deleter"):
                return f"{node.name.value}.{dec.attr.value}"
        return node.name.value
    if is_docstring(node):
        return "__doc__"
    if (stmt := single(node)) is not None:
        target = None
        if isinstance(stmt, cst.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0].target
        elif isinstance(stmt, cst.AnnAssign):
            target = stmt.target
        if isinstance(target, cst.Name):
            return target.value
    return None


def _bound_names(node: cst.CSTNode) -> tuple[str, ...]:
    """Module-level names bound by a statement (recursing into try/if blocks)."""
    if isinstance(node, (cst.ClassDef, cst.FunctionDef)):
        return (node.name.value,)
    if isinstance(node, cst.SimpleStatementLine):
        names: list[str] = []
        for stmt in node.body:
            if isinstance(stmt, cst.Assign):
                names += [n for t in stmt.targets for n in _target_names(t.target)]
            elif isinstance(stmt, cst.AnnAssign) and stmt.value is not None:
                names += _target_names(stmt.target)
            elif isinstance(stmt, (cst.Import, cst.ImportFrom)):
                names += [name for name, _ in split_import(stmt)]
        return tuple(names)
    if isinstance(node, (cst.Try, cst.If)):
        names = []
        for child in node.children:
            if isinstance(child, cst.BaseSuite):
                for stmt in child.body:
                    names += _bound_names(stmt)
            elif isinstance(child, (cst.ExceptHandler, cst.Else, cst.Finally, cst.If)):
                names += _bound_names(child)
        return tuple(dict.fromkeys(names))
    if isinstance(node, (cst.ExceptHandler, cst.Else, cst.Finally)):
        return tuple(n for stmt in node.body.body for n in _bound_names(stmt))
    return ()


def _target_names(target: cst.BaseExpression) -> list[str]:
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        return [n for el in target.elements for n in _target_names(el.value)]
    return []


def split_import(stmt: cst.Import | cst.ImportFrom) -> list[tuple[str, cst.Import | cst.ImportFrom]]:
    """(bound name, single-name import statement) for each alias of an import."""
    if isinstance(stmt.names, cst.ImportStar):
        return []
    out = []
    for alias in stmt.names:
        alias = alias.with_changes(comma=cst.MaybeSentinel.DEFAULT)
        bound = alias.evaluated_alias or alias.evaluated_name
        if alias.asname is None and isinstance(stmt, cst.Import):
            bound = bound.split(".")[0]  # `import paddle.nn` binds `paddle`
        out.append((bound, stmt.with_changes(names=[alias])))
    return out


def is_sibling_import(stmt: cst.BaseSmallStatement, model: str) -> bool:
    """`from .configuration_llama import LlamaConfig`: the same model's other generated file.

    `from . import fusion_ops` is not one: a helper module of the model, imported like any other module."""
    if not (isinstance(stmt, cst.ImportFrom) and len(stmt.relative) == 1 and stmt.module is not None):
        return False
    return is_sibling_module(model, get_full_name_for_node(stmt.module))


def _imported_names(module: cst.Module, model: str) -> frozenset[str]:
    """Names bound by imports anywhere at module level, try/except fallbacks included."""
    names: set[str] = set()

    def walk(stmts) -> None:
        for stmt in stmts:
            if isinstance(stmt, cst.SimpleStatementLine):
                for inner in stmt.body:
                    if isinstance(inner, (cst.Import, cst.ImportFrom)) and not is_sibling_import(inner, model):
                        names.update(name for name, _ in split_import(inner))
            elif isinstance(stmt, (cst.Try, cst.If)):
                walk(stmt.body.body)
                for part in (*getattr(stmt, "handlers", ()), stmt.orelse):
                    if isinstance(part, cst.If):
                        walk([part])
                    elif part is not None:
                        walk(part.body.body)

    walk(module.body)
    return frozenset(names)


def _aligned(statements, reads: list) -> list:
    """Per libcst statement, its ast statements' reads: `a = 1; b = 2` is one line in libcst, two in ast."""
    out, index = [], 0
    for stmt in statements:
        count = len(stmt.body) if isinstance(stmt, cst.SimpleStatementLine) else 1
        chunk = reads[index : index + count]
        index += count
        out.append(chunk)
    return out


def _class_members(node: cst.ClassDef, reads: Reads, lines: list[str]) -> list[Member]:
    body = class_body(node)
    chunks = _aligned(body, list(zip(reads.members, reads.member_spans)))
    members = []
    previous_end = reads.line  # a member's text starts after the one before: its comments come with it
    for stmt, chunk in zip(body, chunks):
        deps = frozenset().union(*(member_reads for member_reads, _ in chunk))
        end = chunk[-1][1][1] if chunk else previous_end
        text = "\n".join(lines[previous_end:end]) if chunk else None
        members.append(Member(member_key(stmt), stmt, deps, text))
        previous_end = end
    return members


def _units_of(stmt: cst.BaseStatement, reads: list[Reads], lines: list[str], start: int, model: str) -> list[Unit]:
    line = reads[0].line
    if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1:
        inner = stmt.body[0]
        if is_sibling_import(inner, model):
            return [Unit((), stmt, True, frozenset(), frozenset(), line)]
        if isinstance(inner, (cst.Import, cst.ImportFrom)):
            return [
                Unit((name,), stmt.with_changes(body=[single]), True, frozenset(), frozenset(), line)
                for name, single in split_import(inner)
            ]
    names = _bound_names(stmt)
    if not names:
        return []
    deps = frozenset().union(*(r.all for r in reads)) - set(names)
    eager = frozenset().union(*(r.eager for r in reads)) - set(names)
    text = "\n".join(lines[start : reads[-1].span[1]])  # from the previous statement's end: comments too
    unit = Unit(names, stmt, False, deps, eager, line, text=text)
    if isinstance(stmt, cst.ClassDef):
        unit.members = _class_members(stmt, reads[0], lines)
    return [unit]


def parse_source(path: Path, code: str) -> SourceModule:
    try:
        module = cst.parse_module(code)
        reads = statement_reads(code, str(path))
    except (cst.ParserSyntaxError, SyntaxError) as exc:
        try:  # Python's own parser gives the line and message users know
            compile(code, str(path), "exec", dont_inherit=True)
        except SyntaxError as py_exc:
            raise ConvertError(path, py_exc.lineno or 1, f"syntax error: {py_exc.msg}") from None
        raise ConvertError(path, getattr(exc, "raw_line", 1), f"syntax error: {exc}") from None
    units: list[Unit] = []
    loose = []
    lines = code.splitlines()
    previous_end = 0
    for stmt, chunk in zip(module.body, _aligned(module.body, reads)):
        found = _units_of(stmt, chunk, lines, previous_end, path.parent.name)
        previous_end = chunk[-1].span[1]
        if found:
            units += found
        else:
            loose.append((stmt, frozenset().union(*(r.all for r in chunk)), chunk[0].line))
    source = SourceModule(path, module, units, loose, _imported_names(module, path.parent.name))
    source.kernels = frozenset(n.name.value for n in module.body if _is_kernel(n))
    return source


def common_suffix(a: str, b: str) -> str:
    """HF's `common_partial_suffix`: the longest common tail of two names, unless it is all of either."""
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return "" if n in (len(a), len(b)) else a[len(a) - n :]


KERNEL = "use_kernel_func_from_hub"  # HF 5.x: `use_kernel_func_from_hub(...)`, `..._with_fallback(...)`


def _is_kernel(node: cst.CSTNode) -> bool:
    return isinstance(node, cst.FunctionDef) and any(
        isinstance(d.decorator, cst.Call)
        and (get_full_name_for_node(d.decorator.func) or "").rpartition(".")[2].startswith(KERNEL)
        for d in node.decorators
    )


def own_module_imports(child: SourceModule, layout: Layout, model: str) -> SourceModule:
    """The modular file with an absolute import of its model's own hand-written module
    (`from transformers.models.ijepa.configuration_ijepa import IJepaConfig`, HF 4.x ijepa) written as the relative
    import HF generates (`from .configuration_ijepa import IJepaConfig`): the same module, kept as an import, not the
    model importing its own generated code. Lines stay where they were."""
    within = child.path.parent.name
    body, changed = [], False
    for stmt in child.module.body:
        inner = single(stmt)
        if isinstance(inner, cst.ImportFrom) and not inner.relative and inner.module is not None:
            stem = own_hand_written(get_full_name_for_node(inner.module), 0, layout, child.path, within)
            if stem is not None:
                stmt = stmt.with_changes(body=[inner.with_changes(module=cst.Name(stem), relative=[cst.Dot()])])
                changed = True
        body.append(stmt)
    return parse_source(child.path, child.module.with_changes(body=body).code) if changed else child


@lru_cache(maxsize=256)
def _cached(path: Path, stamp: tuple[int, int], code: str | None) -> SourceModule:
    if code is None:
        try:
            code = read_source(path)
        except SourceDecodeError as exc:
            raise ConvertError(path, exc.line, exc.message) from None
    return parse_source(path, code)


def load_source(path: Path, code: str | None = None) -> SourceModule:
    """Parse `path` (or the given text for it) once per process."""
    path = Path(path)
    if code is not None:
        return _cached(path, (0, 0), code.removeprefix(BOM))
    stat = path.stat()
    return _cached(path, (stat.st_mtime_ns, stat.st_size), None)


def read_with(read: Callable[[Path], str | None] | None, path: Path) -> str | None:
    """`read(path)` (None without a reader: the file is read from disk), a file that is not UTF-8 named."""
    if read is None:
        return None
    try:
        return read(path)
    except UnicodeDecodeError as exc:
        error = decode_error(path, exc)
        raise ConvertError(path, error.line, error.message) from None
