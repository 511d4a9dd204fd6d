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
from dataclasses import dataclass, field
from typing import Any

FOLD = "__modbuild_replace_assignments__"  # the context manager's name in the loaded module's globals


@contextmanager
def replace_assignments(
    obj: Any,
    where: tuple[str, int],
    overrides: dict[str, tuple[int, Callable[[], Any]]],
    defer_post_init: bool = False,
) -> Iterator[None]:
    """While the block runs, the `nth` assignment of `obj.<name>` made by the parent's method itself (its code
    starts at `where`, (file, line)) stores `make()` instead of the parent's value; with `defer_post_init`, that
    method's own `self.post_init()` does nothing (the child's method calls it last)."""
    cls = type(obj)
    previous = cls.__setattr__
    seen = dict.fromkeys(overrides, 0)

    def by_parent() -> bool:
        code = sys._getframe(2).f_code
        return (code.co_filename, code.co_firstlineno) == where

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if self is obj and name in overrides and by_parent():
            seen[name] += 1
            nth, make = overrides[name]
            if seen[name] == nth:
                value = make()
        previous(self, name, value)

    had_own = "__setattr__" in cls.__dict__
    cls.__setattr__ = __setattr__
    post_init = getattr(cls, "post_init", None) if defer_post_init else None
    if post_init is not None:

        def deferred(self: Any) -> None:
            if self is not obj or not by_parent():
                post_init(self)

        cls.post_init = deferred
    try:
        yield
    finally:
        if had_own:
            cls.__setattr__ = previous
        else:
            del cls.__setattr__
        if post_init is not None:
            del cls.post_init
            if getattr(cls, "post_init", None) is not post_init:
                cls.post_init = post_init


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
    return not _changes_what_it_reads(stmt.value, between)


def _changes_what_it_reads(value: ast.AST, between: list[ast.stmt]) -> bool:
    """Whether `between` assigns a local that `value` reads, or a `self.` attribute it reads."""
    attrs = {a for s in between if (a := _self_attr(s, ast.Assign))}
    return bool(_names(between, ast.Store) & _names([value], ast.Load) or attrs & _self_reads([value]))


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
            return not _changes_what_it_reads(stmt.value, [s for s, _ in out[index + 1 :]])
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


@dataclass
class Plan:
    """How the converter lays out one child method over its parent's, for the loader to reproduce."""

    call: int  # index of the child's `super().f(...)` statement
    folds: dict[int, tuple[str, int]] = field(default_factory=dict)  # child index -> (attribute, nth assignment)
    drops: set[int] = field(default_factory=set)  # child statements the converter does not emit
    post_init_last: bool = False  # `self.post_init()` moved to the end (`__init__` only)


def plan(child: ast.FunctionDef, parent: ast.FunctionDef) -> Plan | None:
    call = next((i for i, s in enumerate(child.body) if _super_method(s) == parent.name), None)
    if call is None:
        return None
    body = parent.body[1:] if ast.get_docstring(parent, clean=False) is not None else parent.body
    # (statement, child index or None for the parent's), as the converter lays the method out
    out: list[tuple[ast.stmt, int | None]] = [(s, i) for i, s in enumerate(child.body[:call])]
    out += [(s, None) for s in body]
    found = Plan(call)
    for index in range(call + 1, len(child.body)):
        stmt = child.body[index]
        if _repeats_parent(stmt, out):
            continue  # the converter drops it; running it again changes nothing
        if isinstance(stmt, ast.Delete) and all(isinstance(t, ast.Name) for t in stmt.targets):
            found.drops.add(index)  # `del x` removes the parent's local x (HF): the parent's own frame is gone
            continue
        attr = _self_attr(stmt, ast.Assign) or _self_attr(stmt, ast.Delete)
        last = next(
            (
                k
                for k in range(len(out) - 1, -1, -1)
                if out[k][1] is None and _self_attr(out[k][0], ast.Assign) == attr
            ),
            None,
        )
        if attr is not None and isinstance(stmt, ast.Delete):
            if last is not None:
                del out[last]  # Python's `del` after the parent's assignment: the same end state
            else:
                found.drops.add(index)  # a marker with nothing to remove: the converter drops it
            continue
        if attr is not None and last is not None and _foldable(stmt, [s for s, _ in out[last + 1 :]]):
            nth = sum(1 for s in body[: body.index(out[last][0]) + 1] if _self_attr(s, ast.Assign) == attr)
            found.folds[index] = (attr, nth)
            out[last] = (stmt, index)
            continue
        out.append((stmt, index))
    if child.name == "__init__" and any(_is_post_init(s) for s, _ in out):
        found.post_init_last = True
        found.drops |= {i for i, s in enumerate(child.body) if _is_post_init(s)}
    return found


def _is_post_init(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Call)
        and not stmt.value.args
        and isinstance(stmt.value.func, ast.Attribute)
        and isinstance(stmt.value.func.value, ast.Name)
        and stmt.value.func.value.id == "self"
        and stmt.value.func.attr == "post_init"
    )


def fold_method(child: ast.FunctionDef, parent: ast.FunctionDef, filename: str) -> ast.FunctionDef:
    """The child method as the converter lays it out: folded assignments made inside
    `with FOLD(self, where, {...}, defer): super()...`, dropped markers gone, `self.post_init()` last."""
    found = plan(child, parent)
    if found is None or not (found.folds or found.drops or found.post_init_last):
        return child
    first = parent.decorator_list[0].lineno if parent.decorator_list else parent.lineno
    where = ast.Tuple([ast.Constant(filename), ast.Constant(first)], ast.Load())
    overrides = ast.Dict(
        keys=[ast.Constant(attr) for attr, _ in found.folds.values()],
        values=[
            ast.Tuple([ast.Constant(nth), ast.Lambda(_no_args(), child.body[i].value)], ast.Load())
            for i, (_, nth) in found.folds.items()
        ],
    )
    args = [ast.Name("self", ast.Load()), where, overrides, ast.Constant(found.post_init_last)]
    guard = ast.With(
        items=[ast.withitem(ast.Call(ast.Name(FOLD, ast.Load()), args, []))], body=[child.body[found.call]]
    )
    skip = set(found.folds) | found.drops
    body = [guard if i == found.call else s for i, s in enumerate(child.body) if i not in skip]
    if found.post_init_last:
        body.append(ast.parse("self.post_init()").body[0])
    new = ast.FunctionDef(**{**{f: getattr(child, f) for f in child._fields}, "body": body})
    return ast.fix_missing_locations(ast.copy_location(new, child))


def _no_args() -> ast.arguments:
    return ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])


class _BaseCalls(ast.NodeTransformer):
    """HF's `Base.f(args)` / `Base().f(args)` (no `self`) for a base of the class: the implementation above the
    parent's, `super(<first base>, self).f(args)`, as the converter's `super().f(args)` in the flattened class."""

    def __init__(self, bases: set[str]):
        self.bases = bases

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func = node.func
        if not isinstance(func, ast.Attribute):
            return node
        owner = func.value
        if isinstance(owner, ast.Call) and not owner.args and not owner.keywords:
            base = ast.unparse(owner.func)
        elif isinstance(owner, (ast.Name, ast.Attribute)) and not (
            node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "self"
        ):
            base = ast.unparse(owner)
        else:
            return node
        if base not in self.bases:
            return node
        first = ast.Subscript(
            ast.Attribute(ast.Name("__class__", ast.Load()), "__bases__", ast.Load()), ast.Constant(0), ast.Load()
        )
        above = ast.Call(ast.Name("super", ast.Load()), [first, ast.Name("self", ast.Load())], [])
        return ast.copy_location(ast.Call(ast.Attribute(above, func.attr, ast.Load()), node.args, node.keywords), node)


def _hf_super_call(child: ast.FunctionDef, methods: dict[str, ast.FunctionDef]) -> ast.FunctionDef:
    """HF's reading of a statement-level `super().f(...)`: a parameter it leaves out takes the child's
    same-named parameter (not the parent's default), and a closing bare call returns what the parent returns."""
    own = {a.arg for a in (*child.args.posonlyargs, *child.args.args, *child.args.kwonlyargs)}
    body = list(child.body)
    for index, stmt in enumerate(body):
        name = _super_method(stmt)
        if name is None or name not in methods:
            continue
        call, parent = stmt.value, methods[name]
        if not any(isinstance(a, ast.Starred) for a in call.args):
            args = parent.args
            positional = [*args.posonlyargs, *args.args][1:]  # without self
            if not _fits(call, args, positional):  # HF ignores such arguments: the child's same-named variables
                call.args, call.keywords = [], []
                if args.kwarg is not None and args.kwarg.arg in _all_own(child):
                    call.keywords = [ast.keyword(None, ast.Name(args.kwarg.arg, ast.Load()))]
            bound = {p.arg for p in positional[: len(call.args)]} | {k.arg for k in call.keywords if k.arg}
            defaults = {p.arg for p in positional[len(positional) - len(args.defaults) :]}
            defaults |= {p.arg for p, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None}
            for param in (*positional[len(call.args) :], *args.kwonlyargs):
                if param.arg not in bound and param.arg in own:
                    call.keywords.append(ast.keyword(param.arg, ast.Name(param.arg, ast.Load())))
                elif param.arg not in bound and param.arg not in defaults:  # unbound (the converter checks it is
                    call.keywords.append(ast.keyword(param.arg, ast.Constant(None)))  # unused): any value does
        if isinstance(stmt, ast.Expr) and index == len(body) - 1 and _returns_value(parent):
            body[index] = ast.copy_location(ast.Return(call), stmt)
    new = ast.FunctionDef(**{**{f: getattr(child, f) for f in child._fields}, "body": body})
    return ast.fix_missing_locations(ast.copy_location(new, child))


def _fits(call: ast.Call, args: ast.arguments, positional: list[ast.arg]) -> bool:
    """Whether Python could bind the call's arguments to the parent's parameters (counts and names only)."""
    names = {p.arg for p in (*positional, *args.kwonlyargs)}
    if len(call.args) > len(positional) and args.vararg is None:
        return False
    return all(k.arg is None or k.arg in names or args.kwarg is not None for k in call.keywords)


def _all_own(fn: ast.FunctionDef) -> set[str]:
    extra = [a for a in (fn.args.vararg, fn.args.kwarg) if a is not None]
    return {a.arg for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs, *extra)}


def _returns_value(fn: ast.FunctionDef) -> bool:
    todo = list(fn.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Return) and node.value is not None:
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))
    return False


def fold_class(node: ast.ClassDef, parent: ast.ClassDef | None, filename: str = "") -> ast.ClassDef:
    """Every method of a child class whose parent class defines the method it calls through super(); and
    HF's `Base.f(...)` calls, in any method."""
    if parent is None:
        return node
    methods = {s.name: s for s in parent.body if isinstance(s, ast.FunctionDef)}
    calls = _BaseCalls({ast.unparse(base) for base in node.bases})
    body = []
    for stmt in node.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name in methods:
            stmt = _hf_super_call(stmt, methods)
            stmt = fold_method(stmt, methods[stmt.name], filename)
        if isinstance(stmt, ast.FunctionDef):
            stmt = calls.visit(stmt)
        body.append(stmt)
    new = ast.ClassDef(**{**{f: getattr(node, f) for f in node._fields}, "body": body})
    return ast.fix_missing_locations(ast.copy_location(new, node))
