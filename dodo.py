"""doit entry point: `doit` converts every model, renders the family graph, and verifies.

The task creators live in `modbuild.tasks`; this file only wires them to this tree.
"""

import signal
from pathlib import Path

from doit import task_params

from modbuild import tasks
from modbuild.lock import hold_project_lock
from modbuild.project import Project

ROOT = Path(__file__).resolve().parent
PROJECT = Project(ROOT)

DOIT_CONFIG = {
    "backend": "json",
    "dep_file": str(ROOT / ".doit.db.json"),
    "default_tasks": ["convert", "render_graph", "verify"],
    "verbosity": 1,
}


def _stop(signum, frame):
    # doit saves its dep DB on KeyboardInterrupt but not when killed by SIGTERM.
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, _stop)
hold_project_lock(ROOT)


@task_params([tasks.FORCE_PARAM])
def task_convert(force):
    """generate generated/<m>/ from modular/<m>/ (parents first)"""
    yield from tasks.convert_tasks(PROJECT, force)


def task_check():
    """fail, naming the files, if generated code differs from a fresh conversion"""
    return tasks.check_task(PROJECT)


def task_render_graph():
    """write graph/models.dot and graph/models.svg"""
    return tasks.graph_task(PROJECT)


def task_verify():
    """numerical checks of every generated model"""
    yield from tasks.verify_tasks(PROJECT)
