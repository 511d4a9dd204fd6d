"""Passes 5 and 6: order the definitions, write imports, `__all__` and the header, format with ruff."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from functools import lru_cache

import libcst as cst

from modbuild.convert.collect import OutUnit
from modbuild.toposort import ordered

# `src = []`: which imports are first-party must not depend on the directory ruff runs in (a `modbuild/` or
# `paddle/` directory there would change the import blocks, so the bytes of the output).
_RUFF_ARGS = [
    "--isolated",
    "--line-length",
    "119",
    "--target-version",
    "py310",
    "--config",
    "src = []",
    "--config",
    "lint.isort.known-first-party = ['modbuild', 'generated']",
]


class FormatError(RuntimeError):
    pass


def order(units: Iterable[OutUnit]) -> list[OutUnit]:
    """Definitions before module-level use; otherwise parent order, child definitions in their place."""
    units = [u for u in units if not u.is_import]
    by_name = {name: u for u in units for name in u.names}
    before = {u.uid: [by_name[d].uid for d in u.eager if d in by_name and by_name[d] is not u] for u in units}
    keys = {u.uid: (u.key, u.uid) for u in units}
    readers: dict[str, list[OutUnit]] = {}  # name -> the units that read it (indexed once: this was quadratic)
    for unit in units:
        for name in unit.deps:
            readers.setdefault(name, []).append(unit)
    for unit in units:  # a child's new helper goes right before the first definition that uses it
        if not unit.floating:
            continue
        users = [keys[u.uid] for name in unit.names for u in readers.get(name, ()) if u is not unit]
        if users and min(users) < keys[unit.uid]:
            keys[unit.uid] = (min(users)[0], -1, unit.uid)
    lookup = {u.uid: u for u in units}
    return [lookup[uid] for uid in ordered(before, keys.__getitem__)]


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def render(
    units: list[OutUnit], cross_imports: dict[str, list[str]], future: bool, public_prefix: str, docstring: str = ""
) -> str:
    imports = sorted({_code(u.node).strip() for u in units if u.is_import})
    if future:
        imports.insert(0, "from __future__ import annotations")
    for module, names in sorted(cross_imports.items()):
        imports.append(f"from .{module} import {', '.join(sorted(names))}")
    ordered = order(units)
    body = [_code(u.node).strip() for u in ordered]
    public = [
        n
        for u in ordered
        if isinstance(u.node, cst.ClassDef)
        for n in u.names
        if n.startswith(public_prefix) and not n.startswith("_")
    ]
    if public:
        body.append(f"__all__ = {public!r}".replace("'", '"'))
    head = f"{docstring}\n\n" if docstring else ""
    return head + "\n".join(imports) + "\n\n\n" + "\n\n\n".join(body) + "\n"


@lru_cache(maxsize=1)
def _ruff() -> str:
    """The ruff binary of the installed ruff package: the venv need not be on PATH (a CLI run by its path)."""
    from ruff.__main__ import find_ruff_bin

    return find_ruff_bin()


def ruff_format(code: str, filename: str = "generated.py") -> str:
    """Sort/merge imports (ruff's isort rules) and format, in one `ruff` call each."""
    steps = (
        ["check", "--fix", "--select", "I", "--exit-zero", "--quiet"],
        ["format"],
    )
    for step in steps:
        proc = subprocess.run(
            [_ruff(), *step, *_RUFF_ARGS, "--stdin-filename", filename, "-"],
            input=code,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise FormatError(f"{filename}: ruff {step[0]} failed: {proc.stderr.strip()}")
        code = proc.stdout
    return code
