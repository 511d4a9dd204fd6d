"""modbuild's `doit run` command (modbuild/doit_run.py): the task names a user gives all run, and the run names
its TP checks before any task runs (`planned_tp_models`), the ones doit will run and no others."""

from __future__ import annotations

from pathlib import Path

from doit.control import TaskControl
from doit.dependency import Dependency, JsonDB
from doit.task import Task
from synthetic import FAMILY, doit, executed, write_tree

from modbuild.doit_run import planned_tp_models


def test_every_task_named_on_the_command_line_runs(tmp_path):
    """The run parses the selection once for its plan and doit parses it again: both names run."""
    root = write_tree(tmp_path / "tree", FAMILY)
    result = doit(root, "convert:child2", "convert:solo")
    assert result.returncode == 0, result.stderr
    assert set(executed(result.stdout)) == {"convert:base", "convert:child2", "convert:solo"}


def _verify_tasks(tmp_path: Path) -> list[Task]:
    """verify:<m>:<check> for models a and b, each reading its own file, and the `verify` group."""
    tasks = []
    for model in ("a", "b"):
        source = tmp_path / f"{model}.py"
        source.write_text(f"# {model}\n")
        for check in ("hf", "tp2", "train-tp2"):
            tasks.append(Task(f"verify:{model}:{check}", [lambda: True], file_dep=[str(source)], subtask_of="verify"))
    tasks.append(Task("verify", None, task_dep=[t.name for t in tasks], has_subtask=True))
    return tasks


def _plan(tasks: list[Task], dep: Dependency, selection: list[str], always: bool = False) -> list[str]:
    control = TaskControl(tasks)
    control.process(selection)
    return planned_tp_models(control, dep, always)


def test_the_plan_holds_the_selected_tp_checks_that_are_not_up_to_date(tmp_path):
    tasks = _verify_tasks(tmp_path)
    dep = Dependency(JsonDB, str(tmp_path / "db.json"))
    assert _plan(tasks, dep, ["verify"]) == ["a", "b"]
    assert _plan(tasks, dep, ["verify:b:hf"]) == []  # no TP check selected
    assert _plan(tasks, dep, ["verify:b:train-tp2"]) == ["b"]

    by_name = {task.name: task for task in tasks}
    for name in ("verify:a:tp2", "verify:a:train-tp2"):  # a's TP checks ran: up to date now
        assert dep.get_status(by_name[name], by_name).status == "run"
        by_name[name].values = {}
        dep.save_success(by_name[name])
    assert _plan(tasks, dep, ["verify"]) == ["b"]
    assert _plan(tasks, dep, ["verify"], always=True) == ["a", "b"]  # `doit -a`

    (tmp_path / "a.py").write_text("# a, edited\n")
    assert _plan(tasks, dep, ["verify"]) == ["a", "b"]


def _threads_in_a_worker(queue) -> None:
    from modbuild.verify.threads import check_threads

    queue.put(check_threads())


def test_a_check_runs_one_math_thread_beside_other_workers_or_the_tp_pool(monkeypatch):
    """Two threads on a core another process holds spin: 8-14 s instead of 1 s for Paddle's 20 train steps."""
    import multiprocessing
    import os

    from modbuild.verify.threads import check_threads
    from modbuild.verify.tp_run import PLAN_ENV

    monkeypatch.delenv(PLAN_ENV, raising=False)
    assert check_threads() == len(os.sched_getaffinity(0))  # alone: every core
    queue = multiprocessing.get_context("fork").Queue()
    worker = multiprocessing.get_context("fork").Process(target=_threads_in_a_worker, args=(queue,))
    worker.start()
    worker.join()
    assert queue.get(timeout=10) == 1  # a `doit -n N` worker
    monkeypatch.setenv(PLAN_ENV, "llama")
    assert check_threads() == 1  # a run whose TP pool works beside it
