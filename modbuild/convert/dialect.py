"""Which release of HF's converter a tree's generated files follow, where its rules changed between releases."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

_VERSION = re.compile(r"""^__version__\s*=\s*["'](\d+)\.(\d+)""", re.MULTILINE)
# From 4.56 on (4.57's converter has it, 4.55's has not), a flattened `__init__` moves the base class's
# `super().__init__(...)` first only when the parent's own `__init__` calls it first.
INIT_STAYS_FROM = (4, 56)


@lru_cache(maxsize=64)
def transformers_release(directory: Path) -> tuple[int, int] | None:
    """(major, minor) of the `transformers` package a model directory sits in, read from its `__version__`;
    None outside one (this repository, PaddleNLP)."""
    for folder in (directory, *directory.parents):
        if folder.name == "transformers" and (init := folder / "__init__.py").is_file():
            found = _VERSION.search(init.read_text(encoding="utf-8", errors="replace"))
            return (int(found[1]), int(found[2])) if found else None
    return None


def init_call_stays(modular: Path) -> bool:
    """Whether the parent's `super().__init__(...)` keeps its place when the parent does not make it first."""
    release = transformers_release(Path(modular).resolve().parent)
    return release is not None and release >= INIT_STAYS_FROM
