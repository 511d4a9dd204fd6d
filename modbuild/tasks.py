"""doit task creators and their actions (top-level functions, so `doit -n N -P process` works).

Hand-edited outputs: `convert:<m>` refuses to overwrite a generated file whose body no longer
matches the content hash in its header, and fails, so children are never built from the edited
copy. `doit convert --force` (or `MODBUILD_FORCE=1`) regenerates it anyway.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from doit.tools import config_changed

from modbuild.atomic import atomic_write
from modbuild.convert import ConvertError, convert_file
from modbuild.convert.emit import is_hand_edited
from modbuild.graph import to_dot
from modbuild.project import CONVERTER_SOURCES, Project

PACKAGE_INIT = '"""Generated model package: see the modular file for the source."""\n'


def _edited(paths) -> list[Path]:
    return [p for p in map(Path, paths) if p.suffix == ".py" and p.name != "__init__.py" and p.exists() and is_hand_edited(p.read_text())]


def outputs_intact(task, values) -> bool:
    """doit `uptodate` check: False when a target was edited by hand, so the task runs and reports it."""
    return not _edited(task.targets)


def convert_model(root: str, model: str, force: bool = False) -> bool:
    project = Project(Path(root))
    force = force or os.environ.get("MODBUILD_FORCE") == "1"
    edited = _edited(project.outputs(model))
    if edited and not force:
        for path in edited:
            print(f"{path}: edited by hand (content hash mismatch); move the change into "
                  f"{project.modular_file(model)} or run `doit convert --force`", file=sys.stderr)
        return False
    try:
        outputs = convert_file(project.modular_file(model), project.layout)
    except ConvertError as exc:
        print(exc, file=sys.stderr)
        return False
    for path in edited:
        print(f"{path}: overwriting a hand edit (--force)", file=sys.stderr)
    init = project.generated / model / "__init__.py"
    if not init.exists():
        atomic_write(init, PACKAGE_INIT)
    for stale in set(project.outputs(model)) - set(outputs) - {init}:
        stale.unlink(missing_ok=True)
    for path, text in outputs.items():
        if not path.exists() or path.read_text() != text:
            atomic_write(path, text)
    return True


FORCE_PARAM = {"name": "force", "long": "force", "type": bool, "default": False,
               "help": "overwrite generated files that were edited by hand"}


def convert_tasks(project: Project, force: bool = False):
    """One subtask per model; a parent's generated files are its children's file_dep."""
    models = project.models
    for model in project.build_order():
        parents = sorted(models[model].parents)
        deps = [str(p) for p in models[model].sources] + CONVERTER_SOURCES
        deps += [str(p) for parent in parents for p in project.outputs(parent) if p.suffix == ".py"]
        yield {
            "name": model,
            "actions": [(convert_model, [str(project.root), model, force])],
            "file_dep": deps,
            "targets": [str(p) for p in project.outputs(model)],
            "uptodate": [outputs_intact],
            "doc": f"generate generated/{model}/ from modular/{model}/",
            "clean": True,
        }


def check_generated(root: str) -> bool:
    """Convert every model in memory (children from fresh parents) and compare with the files on disk."""
    project = Project(Path(root))
    fresh: dict[Path, str] = {}

    def read(path: Path) -> str | None:
        path = Path(path)
        if path in fresh:
            return fresh[path]
        return path.read_text() if path.is_file() else None

    problems = []
    for model in project.build_order():
        try:
            outputs = convert_file(project.modular_file(model), project.layout, read=read)
        except ConvertError as exc:
            problems.append(str(exc))
            continue
        fresh.update(outputs)
        for path, text in outputs.items():
            if not path.exists():
                problems.append(f"{path}: missing (run `doit convert`)")
            elif is_hand_edited(path.read_text()):
                problems.append(f"{path}: edited by hand (content hash mismatch)")
            elif path.read_text() != text:
                problems.append(f"{path}: stale: differs from what `doit convert` would write now")
    for line in problems:
        print(line, file=sys.stderr)
    return not problems


def check_task(project: Project) -> dict:
    return {
        "actions": [(check_generated, [str(project.root)])],
        "uptodate": [False],
        "verbosity": 2,
        "doc": "fail, naming the files, if any generated file differs from a fresh conversion",
    }


def render_graph(root: str) -> bool:
    project = Project(Path(root))
    dot_text = to_dot(project.graph)
    out = project.root / "graph"
    atomic_write(out / "models.dot", dot_text)
    return render_svg(dot_text, out / "models.svg")


def render_svg(dot_text: str, target: Path) -> bool:
    exe = shutil.which("dot")
    if exe is None:
        print("graphviz `dot` is not installed (apt-get install graphviz); SVG not rendered", file=sys.stderr)
        return False
    svg = subprocess.run([exe, "-Tsvg"], input=dot_text, capture_output=True, text=True, check=True).stdout
    atomic_write(target, svg)
    return True


def graph_task(project: Project) -> dict:
    return {
        "actions": [(render_graph, [str(project.root)])],
        "targets": [str(project.root / "graph" / "models.dot"), str(project.root / "graph" / "models.svg")],
        "uptodate": [config_changed(to_dot(project.graph))],
        "doc": "render the model family graph to graph/models.dot and graph/models.svg",
    }


def verify_model(root: str, model: str, check: str) -> bool:
    from modbuild.verify import run_check  # paddle/torch are imported only when verifying

    return run_check(Path(root), model, check)


def verify_tasks(project: Project):
    for model in project.build_order():
        yield {
            "name": f"{model}:modular",
            "actions": [(verify_model, [str(project.root), model, "modular"])],
            "file_dep": [str(p) for p in project.outputs(model) if p.suffix == ".py"],
            "doc": f"generated {model} == modular {model} (runtime loader), bit for bit",
        }
