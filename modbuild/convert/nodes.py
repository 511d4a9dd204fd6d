"""Small predicates on libcst nodes, shared by the passes.

Plain `isinstance` checks rather than `libcst.matchers`: importing the matchers module builds several
hundred dataclasses (about 0.3 s), which was half the time of converting one file in a new process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import libcst as cst

STRINGS = (cst.SimpleString, cst.ConcatenatedString)


def is_name(node: cst.CSTNode | None, value: str | None = None) -> bool:
    return isinstance(node, cst.Name) and (value is None or node.value == value)


def single(stmt: cst.CSTNode) -> cst.BaseSmallStatement | None:
    """The one small statement of a `SimpleStatementLine` holding exactly one."""
    if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1:
        return stmt.body[0]
    return None


def is_docstring(stmt: cst.CSTNode) -> bool:
    """A statement that is only a string: the docstring when it comes first in a body."""
    inner = single(stmt)
    return isinstance(inner, cst.Expr) and isinstance(inner.value, STRINGS)


def class_body(node: cst.ClassDef) -> list[cst.BaseStatement]:
    """A class's statements. `class A(B): x = 1; y = 2` on one line has a suite of small statements: each
    becomes a statement line of its own, as if written in an indented block."""
    if isinstance(node.body, cst.IndentedBlock):
        return list(node.body.body)
    return [
        cst.SimpleStatementLine([small.with_changes(semicolon=cst.MaybeSentinel.DEFAULT)]) for small in node.body.body
    ]


def strip_docstring(body: list[cst.BaseStatement]) -> list[cst.BaseStatement]:
    return body[1:] if body and is_docstring(body[0]) else body


def is_super_call(node: cst.CSTNode) -> bool:
    """`super().f(...)` (or `super(Cls, self).f(...)`)."""
    return (
        isinstance(node, cst.Call)
        and isinstance(node.func, cst.Attribute)
        and isinstance(node.func.value, cst.Call)
        and is_name(node.func.value.func, "super")
    )


def walk(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """`node` and every node below it, parents before children."""
    todo = [node]
    while todo:
        current = todo.pop()
        yield current
        todo.extend(reversed(current.children))


def find_all(node: cst.CSTNode, predicate: Callable[[cst.CSTNode], bool]) -> list[cst.CSTNode]:
    return [n for n in walk(node) if predicate(n)]


def has_decorator(fn: cst.FunctionDef, name: str) -> bool:
    return any(is_name(d.decorator, name) for d in fn.decorators)
