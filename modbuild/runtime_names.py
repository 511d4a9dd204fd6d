"""Which parent a name comes from when several parents define it, for the runtime loader.

The rule (docs/modular.md, "The meaning"): the parent whose code refers to the name, when only one parent's
code does and the child's own code does not; otherwise the parent imported first. "Code that refers to it"
is the code the child's model actually contains: the classes the child flattens and, transitively, what they
use. The converter finds that with its libcst closure; this module walks the stdlib `ast` of the same files,
so the two stay independent.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from typing import Any

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _defined(tree: ast.Module) -> Iterable[tuple[str, ast.AST]]:
    for node in tree.body:
        if isinstance(node, _DEFS):
            yield node.name, node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    yield target.id, node


def _reads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def preferred_parents(
    child: ast.Module,
    origins: dict[str, tuple[Any, str]],
    scratches: list[Any],
    order: list[str],
    gname: Callable[[Any, str], str],
) -> dict[str, str]:
    """{renamed name: parent model} where the rule picks another parent than the first-imported one.

    `origins`: child alias -> (scratch, name in it); `scratches`: the parents' executed files (`.model`,
    `.tree`); `order`: parent models in import order; `gname(scratch, name)`: a parent name's renamed form."""
    defs: dict[str, dict[str, tuple[Any, ast.AST]]] = {}
    for scratch in scratches:
        for name, node in _defined(scratch.tree):
            defs.setdefault(gname(scratch, name), {}).setdefault(scratch.model, (scratch, node))
    contested = {g for g, by in defs.items() if len(by) > 1}
    if not contested:
        return {}
    child_names = {name for name, _ in _defined(child)}
    refs: dict[str, set[str | None]] = {}
    todo: list[tuple[ast.AST, str | None, Any]] = []
    for name, node in _defined(child):
        base = next((b.id for b in getattr(node, "bases", ()) if isinstance(b, ast.Name) and b.id in origins), None)
        if base is None:
            todo.append((node, None, None))
            continue
        scratch, original = origins[base]
        todo.append((node, scratch.model, None))  # the flattened class: the child's body counts as the parent's
        parent = next((n for n, d in _defined(scratch.tree) if n == original), None)
        if parent is not None:
            todo.append((dict(_defined(scratch.tree))[original], scratch.model, scratch))
    seen: set[str] = set()
    while todo:
        node, origin, scratch = todo.pop()
        for read in _reads(node):
            g = gname(scratch, read) if scratch is not None else _child_name(read, origins, gname)
            refs.setdefault(g, set()).add(origin)
            if g in seen or g in child_names or g not in defs:
                continue
            seen.add(g)
            # each parent's code sees its own definition first; the child's, the first-imported parent's
            model = origin if origin in defs[g] else next(m for m in order if m in defs[g])
            found, definition = defs[g][model]
            todo.append((definition, model, found))
    prefer = {}
    for g in contested:
        found = refs.get(g, set())
        if len(found) == 1 and None not in found:
            (model,) = found
            first = next(m for m in order if m in defs[g])
            if model in defs[g] and model != first:
                prefer[g] = model
    return prefer


def _child_name(name: str, origins: dict[str, tuple[Any, str]], gname: Callable[[Any, str], str]) -> str:
    """What a name in the child's code means: an imported parent symbol's renamed name, or itself."""
    if name in origins:
        scratch, original = origins[name]
        return gname(scratch, original)
    return name
