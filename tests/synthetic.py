"""Synthetic project trees (pure Python modular files, no paddle) and a doit runner for them."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

# A dodo.py for a tree: the same wiring as the repository's dodo.py, minus `verify` (needs paddle).
DODO = """\
from pathlib import Path

from doit import task_params

from modbuild import tasks
from modbuild.project import Project

PROJECT = Project(Path(__file__).resolve().parent)
DOIT_CONFIG = tasks.doit_config(PROJECT, verify=False)


@task_params([tasks.FORCE_PARAM])
def task_convert(force):
    yield from tasks.convert_tasks(PROJECT, force)


def task_check():
    return tasks.check_task(PROJECT)


def task_render_graph():
    return tasks.graph_task(PROJECT)
"""
# The repository's pyproject.toml registers modbuild's `doit run` (the tree's lock, SIGTERM) the same way.
DOIT_PLUGINS = """\
[tool.doit.plugins.command]
run = "modbuild.doit_run:Run"
"""

BASE = '''\
"""The root model of the synthetic family."""


def base_helper(x):
    return x * 2


class BaseConfig:
    model_type = "base"

    def __init__(self, scale=1):
        self.scale = scale


class BaseMLP:
    def __init__(self, config):
        self.config = config

    def forward(self, x):
        return base_helper(x) * self.config.scale


class BaseAttention:
    def __init__(self, config):
        self.config = config

    def forward(self, x):
        return x + 1


class BaseModel:
    config_class = BaseConfig

    def __init__(self, config):
        self.config = config
        self.mlp = BaseMLP(config)
        self.attn = BaseAttention(config)

    def forward(self, x):
        return self.mlp.forward(self.attn.forward(x))
'''

CHILD1 = """\
from generated.base.configuration_base import BaseConfig
from generated.base.modeling_base import BaseMLP, BaseModel, base_helper


class Child1Config(BaseConfig):
    model_type = "child1"


class Child1MLP(BaseMLP):
    def forward(self, x):
        return base_helper(x) + 100


class Child1Model(BaseModel):
    pass
"""

GRAND = """\
from generated.child1.configuration_child1 import Child1Config
from generated.child1.modeling_child1 import Child1Attention, Child1Model


class GrandConfig(Child1Config):
    model_type = "grand"


class GrandAttention(Child1Attention):
    def forward(self, x):
        return x + 1000


class GrandModel(Child1Model):
    pass
"""

# relative import form, and no Config class of its own: it inherits base's through BaseModel
CHILD2 = """\
from ..base.modeling_base import BaseAttention, BaseModel


class Child2Attention(BaseAttention):
    def forward(self, x):
        return x - 1


class Child2Model(BaseModel):
    pass
"""

SOLO = """\
class SoloModel:
    def forward(self, x):
        return -x
"""

# base -> child1 -> grand, base -> child2; solo is a second, unrelated root
FAMILY = {"base": BASE, "child1": CHILD1, "grand": GRAND, "child2": CHILD2, "solo": SOLO}


def write_tree(root: Path, models: dict[str, str], dodo: bool = True) -> Path:
    """A project tree: modular/<m>/modular_<m>.py for each model, generated/__init__.py and a dodo.py."""
    root = Path(root)
    (root / "generated").mkdir(parents=True, exist_ok=True)
    (root / "generated" / "__init__.py").write_text("")
    for name, text in models.items():
        write_modular(root, name, text)
    if dodo:
        (root / "dodo.py").write_text(DODO)
        (root / "pyproject.toml").write_text(DOIT_PLUGINS)
    return root


def write_modular(root: Path, name: str, text: str) -> Path:
    path = Path(root) / "modular" / name / f"modular_{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


DOIT = [sys.executable, "-m", "doit"]
_FROZEN: list[Path] = []


def frozen_modbuild() -> Path:
    """A copy of the modbuild package, taken once per process, for the doit subprocesses to import.

    The converter's sources are file_dep of every model, so an edit to them (someone working in this
    checkout) in the middle of a test would rebuild everything; the copy keeps the tests deterministic.
    """
    if not _FROZEN:
        import modbuild

        where = Path(tempfile.mkdtemp(prefix="modbuild-frozen-"))
        atexit.register(shutil.rmtree, where, True)
        shutil.copytree(
            Path(modbuild.__file__).parent, where / "modbuild", ignore=shutil.ignore_patterns("__pycache__")
        )
        _FROZEN.append(where)
    return _FROZEN[0]


def doit_env(extra: dict | None = None) -> dict:
    path = os.pathsep.join(filter(None, [str(frozen_modbuild()), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def doit(root: Path, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`doit <args>` run in `root` (so doit finds root/dodo.py), output captured as text."""
    return subprocess.run([*DOIT, *args], cwd=root, capture_output=True, text=True, env=doit_env(env), timeout=timeout)


def _tasks(stdout: str, statuses: str) -> list[str]:
    """`convert x  written` (modbuild's doit reporter) -> `convert:x`."""
    return [f"convert:{m}" for m in re.findall(rf"^convert (\S+) +(?:{statuses})$", stdout, flags=re.M)]


def executed(stdout: str) -> list[str]:
    """Convert tasks doit ran (`convert x  written`, `unchanged` or `FAILED`), in the order they ended; not those
    it did not start because a parent failed (`convert x  not run: convert:p failed`)."""
    return _tasks(stdout, "written|unchanged|FAILED")


def up_to_date(stdout: str) -> list[str]:
    """Convert tasks doit skipped as up to date (`convert x  up to date`)."""
    return _tasks(stdout, "up to date")


def converted(stdout: str) -> set[str]:
    return {name.split(":", 1)[1] for name in executed(stdout) if name.startswith("convert:")}


@contextmanager
def tree_on_path(root: Path):
    """Import `generated.*` from `root` (and nothing else) inside the block."""

    def ours(name: str) -> bool:
        return name == "generated" or name.startswith("generated.")

    saved = {k: sys.modules.pop(k) for k in [k for k in sys.modules if ours(k)]}
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for k in [k for k in sys.modules if ours(k)]:
            del sys.modules[k]
        sys.modules.update(saved)
