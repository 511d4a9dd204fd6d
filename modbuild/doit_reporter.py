"""What `doit` prints: one line per model converted and per check, a progress count, and the verify table.

    convert llama  written
    convert gemma  unchanged
    convert qwen2  up to date
    [ 3/32] verify qwen2:hf  ok  logits 6.7e-06  loss 0  grads 2.6e-06
    [ 4/32] verify qwen3:paddlenlp  n/a  PaddleNLP 3.0.0b4 has no hand-written Qwen3 model

`unchanged`: the model was converted again (an input changed) and its files came out byte-identical, so
nothing was written (and its children are not rebuilt). A failing task's own error lines (stderr, `path:line: message`) are shown as they happen; a verify run
ends with reports/verify.md's table. The check results are read from reports/checks/, where each check
stores its record.
"""

from __future__ import annotations

import json
from pathlib import Path

from doit.exceptions import TaskFailed, UnmetDependency
from doit.reporter import ConsoleReporter

# record metric -> label; the other metrics (missing parameters, decode mismatches) show only when they fail
SHOWN = {
    "logits": "logits",
    "logits_rel": "logits (relative)",
    "loss": "loss",
    "grads": "grads",
    "grads_rel": "grads",
    "perplexity_rel": "perplexity (relative)",
    "lr": "lr",  # the train checks: worst per-step differences, then the final parameters'
    "grad_norm": "grad-norm",
    "params": "params",
    "token_embeddings": "token embeddings",  # an encoder's real weights: hidden states, then 1 - sentence cosine
    "cosine_gap": "1 - cosine",
}


def _number(value: float) -> str:
    return "0" if value == 0 else f"{value:.1e}"


def check_line(record: dict) -> str:
    """`ok  logits 6.7e-06  loss 0  grads 2.6e-06`, `n/a  <why>` or `FAILED  <what>`."""
    if not record.get("applicable", True):
        return "n/a  " + "; ".join(record.get("notes", []))
    if record.get("error"):
        return "FAILED  " + record["error"].splitlines()[0]
    metrics, bounds = record["metrics"], record["bounds"]
    shown = [f"{SHOWN[k]} {_number(metrics[k])}" for k in metrics if k in bounds and SHOWN.get(k)]
    failed = [
        f"{k} {_number(metrics.get(k, float('inf')))} > {_number(b)}"
        for k, b in bounds.items()
        if not metrics.get(k, float("inf")) <= b
    ]
    if failed:
        return "FAILED  " + "  ".join(failed)
    return "  ".join(["ok", *shown])


class ModbuildReporter(ConsoleReporter):
    desc = "one line per model and check, then the verify table"
    root: Path = Path(".")

    def initialize(self, tasks, selected_tasks):
        names = self._closure(tasks, selected_tasks)
        self.verify_total = len([n for n in names if self._check(n)])
        self.verify_done = 0
        # names padded to the longest, so that the statuses line up
        self.width = max([len(n.split(":", 1)[1]) for n in names if n.count(":") >= 1] or [0])

    @staticmethod
    def _closure(tasks, selected) -> set[str]:
        seen, todo = set(), list(selected)
        while todo:
            name = todo.pop()
            if name in seen or name not in tasks:
                continue
            seen.add(name)
            todo += tasks[name].task_dep + tasks[name].setup_tasks
        return seen

    @staticmethod
    def _check(name: str) -> tuple[str, str] | None:
        kind, _, rest = name.partition(":")
        model, _, check = rest.partition(":")
        return (model, check) if kind == "verify" and check else None

    def _progress(self) -> str:
        self.verify_done += 1
        width = len(str(self.verify_total))
        return f"[{self.verify_done:>{width}}/{self.verify_total}]"

    def _line(self, task, status: str) -> str | None:
        kind, _, rest = task.name.partition(":")
        if check := self._check(task.name):
            model, name = check
            path = self.root / "reports" / "checks" / f"{model}.{name}.json"
            if status in ("ok", "FAILED") and path.is_file():
                line = check_line(json.loads(path.read_text()))
                # a record that disagrees with the task's outcome is from an earlier run
                status = line if (status == "ok") == (not line.startswith("FAILED")) else status
            return f"{self._progress()} verify {f'{model}:{name}':<{self.width}}  {status}"
        if not task.actions:
            return None  # a group (`convert`, `verify`): its subtasks have their own lines
        if kind == "convert" and rest:
            if status == "ok":  # convert_model says how many files it changed; none: the bytes were the same
                status = "written" if task.values.get("changed", 1) else "unchanged"
            return f"convert {rest:<{self.width}}  {status}"
        if status == "ok" and task.targets:
            return f"{task.name}  wrote {', '.join(str(Path(t).relative_to(self.root)) for t in task.targets)}"
        return f"{task.name}  {status}"

    def _write_line(self, task, status: str) -> None:
        if line := self._line(task, status):
            self.write(line + "\n")

    def execute_task(self, task):
        pass  # each task gets one line, when it ends

    def add_success(self, task):
        self._write_line(task, "ok")

    def skip_uptodate(self, task):
        self._write_line(task, "up to date")

    def skip_ignore(self, task):
        self._write_line(task, "ignored")

    def add_failure(self, task, fail):
        if isinstance(fail, UnmetDependency):  # its message is the failed tasks' names
            self._write_line(task, f"not run: {fail.message} failed")
            return
        if fail.report and task.actions:
            self.failures.append({"task": task, "exception": fail})
        self._write_line(task, "FAILED")

    def complete_run(self):
        if self.verify_total and (table := self.root / "reports" / "verify.md").is_file():
            self.write("\n" + table.read_text())
        for failure in self.failures:
            task, exc = failure["task"], failure["exception"]
            out = "".join(a.out for a in task.actions if a.out).strip()
            if out:
                self.write(f"\n{task.name} printed:\n{out}\n")
            if not isinstance(exc, TaskFailed):  # an exception, not an action that reported and returned False
                self.write(f"\n{task.name}: {exc.get_msg().strip()}\n")
        if self.failures:
            names = ", ".join(f["task"].name for f in self.failures)
            self.write(f"\n{len(self.failures)} failed: {names}\n")
        if self.runtime_errors:
            self.write("\nExecution aborted.\n" + "\n".join(self.runtime_errors) + "\n")


def reporter_for(root: Path) -> type[ModbuildReporter]:
    """The reporter class for a tree (doit instantiates it; the class carries where reports/ is)."""
    return type("ModbuildReporter", (ModbuildReporter,), {"root": Path(root)})
