"""Which module-level names each top-level statement reads, from CPython's own scope analysis.

`symtable` is the compiler's symbol table: for every function, class, lambda and comprehension
scope it knows which names are local, free (a closure over an enclosing function) or global. A
dependency is a global read, so attributes, keyword names, comprehension variables, parameters
and locals are never mistaken for one. It gives the same answers as libcst's `ScopeProvider` at a
thirtieth of the cost, which keeps conversion within a few parse times.
"""

from __future__ import annotations

import ast
import bisect
import symtable
from dataclasses import dataclass, field

_SCOPES = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Lambda,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
)


@dataclass
class Reads:
    all: set[str] = field(default_factory=set)
    eager: set[str] = field(default_factory=set)  # read while the module executes
    members: list[set[str]] = field(default_factory=list)  # per class-body statement
    line: int = 0
    span: tuple[int, int] = (0, 0)  # first and last source line, decorators included
    member_spans: list[tuple[int, int]] = field(default_factory=list)


def outer_names(stmt: ast.stmt) -> set[str]:
    """Names a statement loads in the scope it sits in: nested scopes contribute only what runs
    there (decorators, defaults, annotations, bases, a comprehension's first iterable)."""
    found: set[str] = set()
    todo: list[ast.AST] = [stmt]
    while todo:
        current = todo.pop()
        if isinstance(current, ast.Name) and isinstance(current.ctx, ast.Load):
            found.add(current.id)
        elif isinstance(current, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = current.args
            todo += [*current.decorator_list, *args.defaults, *(d for d in args.kw_defaults if d)]
            todo += [a.annotation for a in (*args.posonlyargs, *args.args, *args.kwonlyargs) if a.annotation]
            todo += [current.returns] if current.returns else []
        elif isinstance(current, ast.ClassDef):
            todo += [*current.decorator_list, *current.bases, *(k.value for k in current.keywords)]
        elif isinstance(current, ast.Lambda):
            todo += [*current.args.defaults, *(d for d in current.args.kw_defaults if d)]
        elif isinstance(current, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            todo.append(current.generators[0].iter)
        else:
            todo += list(ast.iter_child_nodes(current))
    return found


def _annotation_names(stmt: ast.stmt) -> set[str]:
    """Names in annotations: under `from __future__ import annotations` symtable does not see them, but
    the emitted code still needs their imports. Only statement bodies are searched: annotations
    never sit inside expressions."""
    found: set[str] = set()
    todo = [stmt]
    while todo:
        node = todo.pop()
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            every = (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg)
            annotations = [a.annotation for a in every if a is not None and a.annotation is not None]
            annotations += [node.returns] if node.returns else []
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        found.update(n.id for a in annotations for n in ast.walk(a) if isinstance(n, ast.Name))
        for name in ("body", "orelse", "finalbody", "handlers"):
            todo += [child for child in getattr(node, name, ()) if isinstance(child, (ast.stmt, ast.excepthandler))]
    return found


def _table_reads(table: symtable.SymbolTable) -> set[str]:
    """Global reads inside a scope and every scope nested in it."""
    reads = {s.get_name() for s in table.get_symbols() if s.is_referenced() and s.is_global()}
    if table.get_type() == "class":  # class bodies look unassigned names up in the globals
        reads |= {
            s.get_name() for s in table.get_symbols() if s.is_referenced() and not s.is_assigned() and not s.is_free()
        }
    for child in table.get_children():
        reads |= _table_reads(child)
    return reads


class _Children:
    """A scope's child scopes, by line: `get_children` builds new wrapper objects on every call, so asking it once
    per statement made a module's analysis quadratic in its size."""

    def __init__(self, table: symtable.SymbolTable | None):
        children = table.get_children() if table is not None else []
        pairs = sorted(((t.get_lineno(), i), t) for i, t in enumerate(children))
        self.lines = [line for (line, _), _ in pairs]
        self.tables = [t for _, t in pairs]

    def within(self, start: int, end: int) -> list[symtable.SymbolTable]:
        return self.tables[bisect.bisect_left(self.lines, start) : bisect.bisect_right(self.lines, end)]


def _span(node: ast.stmt) -> tuple[int, int]:
    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))])
    return start, node.end_lineno or node.lineno


def statement_reads(code: str, filename: str) -> list[Reads]:
    """One `Reads` per top-level ast statement, in order."""
    tree = ast.parse(code, filename=filename)
    top = _Children(symtable.symtable(code, filename, "exec"))
    out = []
    for stmt in tree.body:
        start, end = _span(stmt)
        nested = top.within(start, end)
        reads = Reads(line=stmt.lineno, span=(start, end))
        reads.eager = outer_names(stmt)
        reads.all = set(reads.eager).union(*(_table_reads(t) for t in nested)) | _annotation_names(stmt)
        if isinstance(stmt, ast.ClassDef):
            cls = next((t for t in nested if t.get_type() == "class" and t.get_name() == stmt.name), None)
            reads.eager |= _table_reads_outside_functions(cls) if cls else set()
            local = {s.get_name() for s in cls.get_symbols() if s.is_assigned()} if cls else set()
            members = _Children(cls)
            for member in stmt.body:
                m_start, m_end = _span(member)
                inner = members.within(m_start, m_end)
                own = (outer_names(member) - local) | _annotation_names(member)
                reads.members.append(own.union(*(_table_reads(t) for t in inner)))
                reads.member_spans.append((m_start, m_end))
        out.append(reads)
    return out


def _table_reads_outside_functions(table: symtable.SymbolTable) -> set[str]:
    return {s.get_name() for s in table.get_symbols() if s.is_referenced() and (s.is_global() or not s.is_assigned())}
