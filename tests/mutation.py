"""A broken copy of a generated model, for the mutation tests: each shows that a model's `hf` check fails when
one of its features is removed or changed."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def mutated(tmp_path: Path, model: str, kind: str, old: str, new: str, helper: str = "") -> ModuleType:
    """A copy of generated/<model> as its own package, `old` replaced by `new` (found exactly once) in its `kind`
    file (modeling or configuration) and `helper` appended there; returns its modeling module."""
    source_dir = ROOT / "generated" / model
    package = tmp_path / f"broken_{model}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for stem in (f"configuration_{model}", f"modeling_{model}"):
        shutil.copy(source_dir / f"{stem}.py", package)
    path = package / f"{kind}_{model}.py"
    source = path.read_text()
    assert source.count(old) == 1, f"mutation target {old!r} found {source.count(old)} times"
    path.write_text(source.replace(old, new) + helper)
    sys.path.insert(0, str(tmp_path))  # the modeling module's relative import of its configuration
    try:
        return importlib.import_module(f"{package.name}.modeling_{model}")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.startswith(package.name)]:
            del sys.modules[name]  # the next test's copy under the same name is imported afresh
