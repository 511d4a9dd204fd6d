"""HF's in-place replacement of `self.x = ...` after a `super()` call, at run time, for the runtime loader.

In the modular dialect, a child's `self.head_dim = v` after `super().__init__(...)` replaces the parent's
assignment of `self.head_dim` where the parent made it, so the parent's code after that point already sees
`v`. Python alone would run the parent's assignment, the rest of the parent's body, and only then `v`.

The runtime loader gives the dialect's meaning without transforming the parent: the child's method runs the
`super()` call inside `replace_assignments(self, {...})`, which turns the parent's assignment of `self.x` into
an assignment of `v` (computed at that moment), and the child's own statement is dropped. Which statements
fold follows the converter's documented rule (docs/modular.md), decided here on the stdlib `ast`: the
parent's top-level assignment is replaced unless something between it and the child's statement calls
`self.f()` / `super().f()` (which may set the attribute again) or writes a name the new value reads.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

FOLD = "__modbuild_replace_assignments__"  # the context manager's name in the loaded module's globals


@contextmanager
def replace_assignments(
    obj: Any, where: tuple[str, int], overrides: dict[str, tuple[int, Callable[[], Any]]]
) -> Iterator[None]:
    """While the block runs, the `nth` assignment of `obj.<name>` made by the parent's method itself (its code
    starts at `where`, (file, line)) stores `make()` instead of the parent's value."""
    cls = type(obj)
    previous = cls.__setattr__
    seen = dict.fromkeys(overrides, 0)

    def __setattr__(self: Any, name: str, value: Any) -> None:
        code = sys._getframe(1).f_code
        if self is obj and name in overrides and (code.co_filename, code.co_firstlineno) == where:
            seen[name] += 1
            nth, make = overrides[name]
            if seen[name] == nth:
                value = make()
        previous(self, name, value)

    had_own = "__setattr__" in cls.__dict__
    cls.__setattr__ = __setattr__
    try:
        yield
    finally:
        if had_own:
            cls.__setattr__ = previous
        else:
            del cls.__setattr__


def _self_attr(stmt: ast.stmt, kind: type) -> str | None:
    target = None
    if kind is ast.Assign and isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target = stmt.targets[0]
    elif kind is ast.Delete and isinstance(stmt, ast.Delete) and len(stmt.targets) == 1:
        target = stmt.targets[0]
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
        return target.attr
    return None


def _super_method(stmt: ast.stmt) -> str | None:
    """`f` for a statement-level `super().f(...)` / `x = super().f(...)`."""
    value = stmt.value if isinstance(stmt, (ast.Expr, ast.Assign)) else None
    if (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and isinstance(value.func.value, ast.Call)
        and isinstance(value.func.value.func, ast.Name)
        and value.func.value.func.id == "super"
    ):
        return value.func.attr
    return None


def _names(nodes: list[ast.AST], ctx: type) -> set[str]:
    return {n.id for node in nodes for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ctx)}


def _self_reads(nodes: list[ast.AST]) -> set[str]:
    found = set()
    for node in nodes:
        for n in ast.walk(node):
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self":
                found.add(n.attr)
    return found


def _foldable(stmt: ast.Assign, between: list[ast.stmt]) -> bool:
    written = _names(between, ast.Store) | {a for s in between if (a := _self_attr(s, ast.Assign))}
    reads = _names([stmt.value], ast.Load) | _self_reads([stmt.value])
    return not reads & written


_EFFECTS = (ast.Call, ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr, ast.Lambda)


def _repeats_parent(stmt: ast.stmt, out: list[tuple[ast.stmt, int | None]]) -> bool:
    """A child's word-for-word repeat of a parent's pure local assignment, nothing it reads changed since."""
    if not (isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets)):
        return False
    if any(isinstance(n, _EFFECTS) for n in ast.walk(stmt.value)):
        return False
    dump = ast.dump(stmt)
    for index in range(len(out) - 1, -1, -1):
        if out[index][1] is None and ast.dump(out[index][0]) == dump:
            later = [s for s, _ in out[index + 1 :]]
            written = _names(later, ast.Store) | {a for s in later if (a := _self_attr(s, ast.Assign))}
            return not written & (_names([stmt], ast.Load) | _self_reads([stmt.value]))
    return False


def init_call_first(fn: ast.FunctionDef) -> ast.FunctionDef | None:
    """The parent's `__init__` with its statement-level `super().__init__(...)` moved first (after the
    docstring), as the converter lays out a flattened `__init__`; None when it is first already or absent."""
    start = 1 if ast.get_docstring(fn, clean=False) is not None else 0
    index = next((i for i, s in enumerate(fn.body) if isinstance(s, ast.Expr) and _is_init_call(s.value)), None)
    if index is None or index <= start:
        return None
    body = [*fn.body[:start], fn.body[index], *fn.body[start:index], *fn.body[index + 1 :]]
    return ast.FunctionDef(**{**{f: getattr(fn, f) for f in fn._fields}, "body": body})


def _is_init_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "__init__"
        and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Name)
        and node.func.value.func.id == "super"
    )


def recompile_init(cls: type, node: ast.ClassDef, namespace: dict, filename: str) -> None:
    """Give a parent class (in its private scratch module) the `init_call_first` version of its `__init__`."""
    fn = next((s for s in node.body if isinstance(s, ast.FunctionDef) and s.name == "__init__"), None)
    if fn is None or "__init__" not in cls.__dict__ or (reordered := init_call_first(fn)) is None:
        return
    holder = ast.ClassDef(name=node.name, bases=[], keywords=[], body=[reordered], decorator_list=[])
    module = ast.fix_missing_locations(ast.Module([ast.copy_location(holder, node)], []))
    local: dict = {}
    exec(compile(module, filename, "exec", dont_inherit=True), namespace, local)  # noqa: S102 (the parent's own code)
    init = local[node.name].__dict__["__init__"]
    for name, cell in zip(init.__code__.co_freevars, init.__closure__ or ()):
        if name == "__class__":
            cell.cell_contents = cls  # zero-argument super() means the real parent class
    init.__qualname__ = cls.__dict__["__init__"].__qualname__
    cls.__init__ = init


def plan(child: ast.FunctionDef, parent: ast.FunctionDef) -> tuple[int, dict[int, tuple[str, int]]] | None:
    """(index of the super() statement, {child statement index: (attribute, nth parent assignment)})."""
    call = next((i for i, s in enumerate(child.body) if _super_method(s) == parent.name), None)
    if call is None:
        return None
    body = parent.body[1:] if ast.get_docstring(parent, clean=False) is not None else parent.body
    # (statement, child index or None for the parent's), as the converter lays the method out
    out: list[tuple[ast.stmt, int | None]] = [(s, i) for i, s in enumerate(child.body[:call])]
    out += [(s, None) for s in body]
    folds: dict[int, tuple[str, int]] = {}
    for index in range(call + 1, len(child.body)):
        stmt = child.body[index]
        if _repeats_parent(stmt, out):
            continue  # the converter drops it; running it again changes nothing
        attr = _self_attr(stmt, ast.Assign) or _self_attr(stmt, ast.Delete)
        last = next(
            (
                k
                for k in range(len(out) - 1, -1, -1)
                if out[k][1] is None and _self_attr(out[k][0], ast.Assign) == attr
            ),
            None,
        )
        if attr is not None and last is not None and isinstance(stmt, ast.Delete):
            del out[last]
            continue
        if attr is not None and last is not None and _foldable(stmt, [s for s, _ in out[last + 1 :]]):
            nth = sum(1 for s in body[: body.index(out[last][0]) + 1] if _self_attr(s, ast.Assign) == attr)
            folds[index] = (attr, nth)
            out[last] = (stmt, index)
            continue
        out.append((stmt, index))
    return call, folds


def fold_method(child: ast.FunctionDef, parent: ast.FunctionDef, filename: str) -> ast.FunctionDef:
    """The child method with its folded assignments moved into `with FOLD(self, {...}): super()...`."""
    found = plan(child, parent)
    if not found or not found[1]:
        return child
    call, folds = found
    first = parent.decorator_list[0].lineno if parent.decorator_list else parent.lineno
    where = ast.Tuple([ast.Constant(filename), ast.Constant(first)], ast.Load())
    overrides = ast.Dict(
        keys=[ast.Constant(attr) for attr, _ in folds.values()],
        values=[
            ast.Tuple([ast.Constant(nth), ast.Lambda(_no_args(), child.body[i].value)], ast.Load())
            for i, (_, nth) in folds.items()
        ],
    )
    guard = ast.With(
        items=[
            ast.withitem(ast.Call(ast.Name(FOLD, ast.Load()), [ast.Name("self", ast.Load()), where, overrides], []))
        ],
        body=[child.body[call]],
    )
    body = [guard if i == call else s for i, s in enumerate(child.body) if i not in folds]
    new = ast.FunctionDef(**{**{f: getattr(child, f) for f in child._fields}, "body": body})
    return ast.fix_missing_locations(ast.copy_location(new, child))


def _no_args() -> ast.arguments:
    return ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])


def fold_class(node: ast.ClassDef, parent: ast.ClassDef | None, filename: str = "") -> ast.ClassDef:
    """Every method of a child class whose parent class defines the method it calls through super()."""
    if parent is None:
        return node
    methods = {s.name: s for s in parent.body if isinstance(s, ast.FunctionDef)}
    body = []
    for stmt in node.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name in methods:
            stmt = fold_method(stmt, methods[stmt.name], filename)
        body.append(stmt)
    new = ast.ClassDef(**{**{f: getattr(node, f) for f in node._fields}, "body": body})
    return ast.fix_missing_locations(ast.copy_location(new, node))
