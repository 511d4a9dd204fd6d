"""`doit` / `doit run` for a modbuild tree: one run at a time, and Ctrl-C or SIGTERM stops it cleanly.

Registered for this tree in pyproject.toml (`[tool.doit.plugins.command]`), so only the command that runs
tasks takes the lock and the signal handlers; `doit list`, `doit info` and `doit graph` do neither.

On an interrupt doit still saves its dep DB (the tasks that finished stay done; the one cut short reruns
next time, and its files were each replaced atomically or not at all); this command then prints one line
instead of a traceback and exits 128 + the signal number, as a shell does (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import sys
from pathlib import Path

from doit.cmd_run import Run as DoitRun

from modbuild.lock import hold_project_lock

INTERRUPTED = (
    "interrupted: stopped cleanly, the tree is consistent (finished models are saved; `doit` redoes the rest)"
)

_received: list[int] = []  # the signal that stopped the run


def stop(signum, frame):
    """The first signal stops the run (KeyboardInterrupt: doit's runner saves the dep DB on its way out); later
    ones are ignored, so that they cannot cut that save short (the JSON DB is truncated, then rewritten)."""
    if _received:
        return
    _received.append(signum)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _stop_worker(signum, frame):
    if not _received:  # once: the task unwinds (its temp files removed) and doit's worker loop ends
        _received.append(signum)
        raise KeyboardInterrupt


def _in_worker() -> None:
    """In a `-n N` worker (a fork of this process). Ctrl-C reaches the whole process group, but only the main
    process acts on it: it stops its workers with SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_worker)


def _end_workers() -> None:
    """After an interrupt doit has sent its workers SIGTERM; one stuck on its way out would keep this process
    waiting for it at exit."""
    for child in multiprocessing.active_children():
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
            child.join()


def planned_tp_models(control, dep_manager, always: bool) -> list[str]:
    """The models whose TP checks (`verify:<m>:tp2`, `verify:<m>:train-tp2`) this run will run: selected (with
    everything they depend on) and not up to date, in doit's order. Nothing runs yet; doit computes the same
    status again before each task."""
    from modbuild.verify import TP_CHECKS

    selected, stack = set(), list(control.selected_tasks)
    while stack:
        name = stack.pop()
        if name not in selected:
            selected.add(name)
            stack.extend(control.tasks[name].task_dep)
    models: list[str] = []
    for name, task in control.tasks.items():
        kind, _, rest = name.partition(":")
        model, _, check = rest.rpartition(":")
        if kind != "verify" or check not in TP_CHECKS or name not in selected or model in models:
            continue
        if always or dep_manager.get_status(task, control.tasks).status != "up-to-date":
            models.append(model)
    return models


class Run(DoitRun):
    @functools.wraps(DoitRun._execute)  # doit passes the options that this signature names
    def _execute(self, outfile, **options):
        """Name the run's TP checks before any task runs (the `-n N` workers inherit the environment), so that
        their requests are queued in the TP pool together (`modbuild.verify.tp_run.PLAN_ENV`)."""
        from doit.control import TaskControl

        from modbuild.verify.tp_run import PLAN_ENV

        control = TaskControl(self.task_list, auto_delayed_regex=options.get("auto_delayed_regex", False))
        control.process(self.sel_tasks)
        os.environ[PLAN_ENV] = ",".join(planned_tp_models(control, self.dep_manager, options.get("always", False)))
        for task in self.task_list:  # parsed again by doit's own TaskControl: a parsed task hides the names after it
            task.options = None
        return super()._execute(outfile, **options)

    def execute(self, params, args):
        os.register_at_fork(after_in_child=_in_worker)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        load_config = self.loader.load_doit_config

        def load_config_and_lock() -> dict:
            # After dodo.py is loaded (doit is in its directory) and before the dep DB is read.
            config = load_config()
            hold_project_lock(Path(config.get("dep_file") or params["dep_file"]).resolve().parent)
            return config

        self.loader.load_doit_config = load_config_and_lock
        try:
            return super().execute(params, args)
        except KeyboardInterrupt:  # doit's runner has saved the dep DB and reported by now (its `finally`)
            signum = _received[-1] if _received else signal.SIGINT
            print(INTERRUPTED, file=sys.stderr, flush=True)
            if params.get("num_process"):
                # `-n N`: the workers are stopped; exit without multiprocessing's exit handlers, which can wait
                # forever on a queue's feeder thread once the workers are gone
                _end_workers()
                sys.stdout.flush()
                os._exit(128 + signum)
            return 128 + signum
