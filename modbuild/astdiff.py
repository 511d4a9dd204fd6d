"""Compare two Python files definition by definition: normalised AST, docstrings ignored.

Used to measure the converter against another tool's output (HF's generated files): a definition is
*equal* when its `ast.dump` matches, whatever the formatting, comments or docstrings.
"""

from __future__ import annotations

import ast


def _strip_docstrings(tree: ast.Module) -> ast.Module:
    """Drop module/class/function docstrings; an emptied body becomes `pass` (doc-only == pass-only)."""
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = node.body[0] if node.body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            node.body = node.body[1:] or ([] if isinstance(node, ast.Module) else [ast.Pass()])
    return tree


def _bound_names(target: ast.AST) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in _bound_names(elt)]
    return []  # attribute/subscript targets bind no module name


def _keyed(body: list[ast.stmt], into: dict[str, ast.AST]) -> None:
    """Top-level statements by the names they bind; `if`/`try` blocks are looked into."""
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            into[node.name] = node
        elif isinstance(node, ast.Assign):
            for name in (n for t in node.targets for n in _bound_names(t)):
                into[name] = node
        elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
            into[node.target.id + (" +=" if isinstance(node, ast.AugAssign) else "")] = node
        elif isinstance(node, (ast.If, ast.Try)):
            for block in [node.body, node.orelse, getattr(node, "finalbody", [])]:
                _keyed(block, into)
            for handler in getattr(node, "handlers", []):
                _keyed(handler.body, into)
    into.pop("__all__", None)
    into.pop("__all__ +=", None)


def definitions(text: str) -> dict[str, ast.AST]:
    """Docstring-stripped top-level definitions by name, in file order (raises SyntaxError)."""
    keyed: dict[str, ast.AST] = {}
    _keyed(_strip_docstrings(ast.parse(text)).body, keyed)
    return keyed


def dump(node: ast.AST) -> str:
    return ast.dump(node, include_attributes=False)


def compare(expected: str, produced: str) -> dict[str, str]:
    """Each definition's status: `equal`, `differs`, `missing` (expected only) or `extra` (produced only)."""
    want, got = definitions(expected), definitions(produced)
    status = {
        name: ("missing" if name not in got else "equal" if dump(node) == dump(got[name]) else "differs")
        for name, node in want.items()
    }
    status.update({name: "extra" for name in got if name not in want})
    return status
