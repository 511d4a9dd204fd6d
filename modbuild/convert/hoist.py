"""`super()` inside an expression: hoisted into a local before its statement, so it can be unrolled.

    return [u * o for u, o in zip(self.up, super().forward(xs))]
becomes
    super_forward = super().forward(xs)
    return [u * o for u, o in zip(self.up, super_forward)]

and the assignment is then unrolled like any `x = super().f(...)`. Hoisting runs the call before the rest of
its statement, so it is allowed only where that keeps the order of evaluation: the call is not under a
condition, a lambda, or a part of a comprehension that runs per item, and nothing evaluated before it in
the statement calls anything. Otherwise it is an error naming the line.
"""

from __future__ import annotations

from collections.abc import Callable

import libcst as cst

from modbuild.convert.nodes import find_all, is_super_call
from modbuild.convert.source import ConvertError
from modbuild.convert.supercall import super_method

_EFFECTS = (cst.Call, cst.Await, cst.Yield, cst.NamedExpr)
_CONDITIONAL = (cst.IfExp, cst.BooleanOperation, cst.Lambda)
_COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp)


class _Path(cst.CSTVisitor):
    """The chain of ancestors of one node."""

    def __init__(self, target: cst.CSTNode):
        self.target, self.stack, self.found = target, [], None

    def on_visit(self, node: cst.CSTNode) -> bool:
        self.stack.append(node)  # on_leave runs for every visited node, children skipped or not
        if node is self.target:
            self.found = list(self.stack)
        return self.found is None

    def on_leave(self, node: cst.CSTNode) -> None:
        self.stack.pop()


def _ancestors(stmt: cst.CSTNode, node: cst.CSTNode) -> list[cst.CSTNode]:
    finder = _Path(node)
    stmt.visit(finder)
    return finder.found or []


def _evaluated_before(parent: cst.CSTNode, child: cst.CSTNode, outer: cst.CSTNode | None) -> list | None:
    """Parts of `parent` evaluated before `child`; None when `child` may run conditionally or repeatedly.
    `outer` is `parent`'s own parent (a comprehension's first `for` runs once, in the enclosing scope)."""
    if isinstance(parent, _CONDITIONAL):
        first = parent.test if isinstance(parent, cst.IfExp) else getattr(parent, "left", None)
        return [] if child is first else None
    if isinstance(parent, _COMPREHENSIONS):
        return [] if child is parent.for_in else None  # the element is evaluated after, per item
    if isinstance(parent, cst.CompFor):
        return [] if child is parent.iter and isinstance(outer, _COMPREHENSIONS) else None
    if isinstance(parent, (cst.Assign, cst.AugAssign, cst.AnnAssign)):
        return []  # the value is evaluated before the targets
    before = []
    for part in parent.children:
        if part is child:
            return before
        before.append(part)
    return before


def _unsafe(parent: cst.CSTNode, child: cst.CSTNode, outer: cst.CSTNode | None) -> str | None:
    before = _evaluated_before(parent, child, outer)
    if before is None:
        return "it runs only under a condition, or per item, there"
    if any(find_all(part, lambda n: isinstance(n, _EFFECTS)) for part in before):
        return "something evaluated before it in the statement calls a function"
    return None


def hoist(
    stmt: cst.BaseStatement,
    methods: set[str],
    taken: set[str],
    error: Callable[[str], ConvertError],
    keep: Callable[[str], None] | None = None,
) -> list[cst.BaseStatement]:
    """`stmt` preceded by one `super_<f> = super().<f>(...)` per nested call of an inherited method.

    With `keep`, a call inside a block (HF leaves those as they are: they reach the flattened class's bases) is
    kept and `keep` told why, instead of an error."""
    calls = [c for c in find_all(stmt, is_super_call) if super_method(c) in methods]
    if not calls:
        return [stmt]
    if isinstance(stmt, (cst.While, cst.With, cst.Try, cst.FunctionDef, cst.ClassDef)) or len(calls) > 1:
        name = super_method(calls[0])
        if keep is not None and isinstance(stmt, cst.BaseCompoundStatement):
            keep(f"super().{name}(...) inside a block is not inlined; the call stays, as HF keeps it")
            return [stmt]
        raise error(f"super().{name}(...) here cannot be flattened: assign it to a local first")
    (call,) = calls
    name = super_method(call)
    chain = _ancestors(stmt, call)
    for index, (parent, child) in enumerate(zip(chain, chain[1:])):
        if isinstance(parent, cst.BaseCompoundStatement) and child not in (
            getattr(parent, "test", None),
            getattr(parent, "iter", None),
        ):
            if keep is not None:
                keep(f"super().{name}(...) inside a block is not inlined; the call stays, as HF keeps it")
                return [stmt]
            raise error(f"super().{name}(...) inside a block cannot be flattened: assign it before the block")
        outer = chain[index - 1] if index else None
        if (why := _unsafe(parent, child, outer)) is not None:
            raise error(f"super().{name}(...) cannot be moved out of its expression: {why}")
    local = f"super_{name}"
    while local in taken:
        local += "_"
    assign = cst.SimpleStatementLine([cst.Assign([cst.AssignTarget(cst.Name(local))], call)])
    return [assign, stmt.deep_replace(call, cst.Name(local))]
