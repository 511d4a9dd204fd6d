"""The converter on HF transformers' own modular corpus: how many shipped generated files it reproduces.

Every `models/<m>/modular_<m>.py` of the installed transformers sits beside the files HF's converter
generated from it (their header says "This file was automatically generated from ...modular_<m>.py").
Those files are the expected outputs. The whole package tree is copied to a temp dir (so relative
imports such as `from ...modeling_utils import` still reach real files), the converter is run there,
and every expected file is compared with what it wrote, one top-level definition at a time
(stdlib `ast`, docstrings stripped).

    python bench/hf_corpus.py [--mode all|batch|files] [--only gemma,llava] [--show 15] [--json out.json] [--keep]
                              [--wheel transformers-X-py3-none-any.whl | --tree DIR]

The corpus is the installed transformers unless `--wheel` (a downloaded wheel, unpacked into the temp dir,
never installed: `pip download transformers==5.24.0 --no-deps`) or `--tree` (an unpacked wheel or a checkout:
the directory holding `transformers/`, or `transformers/` itself, or its `src/`) names another.

Modes: `batch` is one `modbuild convert` over the whole tree (timed against the libcst parse time of
its inputs); `files` is one subprocess per modular file, parents first, which tells crashes
(a traceback) from refusals (a clean `path:line: message`). No ML framework is imported.
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import importlib.util
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import libcst
import networkx as nx

from modbuild.astdiff import definitions, dump

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "transformers.models"
SRC = ROOT  # the directory holding the `modbuild` package to benchmark (--src)
HEADER = "This file was automatically generated from"
ERROR_LINE = re.compile(r"^(?P<path>[^\s:]+\.py)(?::(?P<line>\d+))?: (?P<msg>.+)$")  # the converter's clean refusals
BLOCKED = "not converted: parent"  # a model left alone because a parent failed: counted apart from refusals
WARNING = re.compile(r"^\w*Warning: ")  # `warnings` output has the same path:line: shape; not a refusal
TRACEBACK = "Traceback (most recent call last)"

# Differences the converter makes on purpose, each documented in docs/modular.md ("Where modbuild differs
# from HF"): (short name, predicate, reason). The predicate gets (model, kind, name, expected, produced) for a
# definition that differs, or is missing (produced is None), with docstring-stripped `ast` nodes.
Predicate = Callable[[str, str, str, ast.AST, "ast.AST | None"], bool]


def _unused_logger(model: str, kind: str, name: str, expected: ast.AST, produced: ast.AST | None) -> bool:
    """HF writes the modular file's `logger = ...` into every file; modbuild only where something uses it."""
    return produced is None and name == "logger"


def _python_binding(model: str, kind: str, name: str, expected: ast.AST, produced: ast.AST | None) -> bool:
    """HF ignores the arguments of an unrolled super() call; modbuild binds them as Python does, which adds a
    `kwargs = {...}` / `super_x = value` line and uses the bound name. Undo that and the two agree."""
    if produced is None:
        return False

    class Unbind(ast.NodeTransformer):
        def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
            self.generic_visit(node)
            params = {a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)}
            if node.args.kwarg:
                params.add(node.args.kwarg.arg)
            node.body = [s for s in node.body if not _is_binding(s, params)] or [ast.Pass()]
            return node

        def visit_Name(self, node: ast.Name) -> ast.AST:
            return ast.Name(node.id[len("super_") :], node.ctx) if node.id.startswith("super_") else node

    return dump(Unbind().visit(copy.deepcopy(produced))) == dump(expected)


def _is_binding(stmt: ast.stmt, params: set[str]) -> bool:
    """A line binding a parent's parameter for an unrolled super() call: `super_x = v`, `kwargs = {..., **kwargs}`,
    or a parameter of the method set from a name or constant (`window_size = out_hidden_size`)."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
        return False
    target = stmt.targets[0].id
    merged = isinstance(stmt.value, ast.Dict) and (not stmt.value.keys or any(k is None for k in stmt.value.keys))
    plain = target in params and isinstance(stmt.value, (ast.Name, ast.Constant))
    return target.startswith("super_") or merged or plain


def _extended_prefix(model: str, kind: str, name: str, expected: ast.AST, produced: ast.AST | None) -> bool:
    """A child prefix that extends its parent's (ModernBert -> ModernBertDecoder): HF keeps the parent's class
    names for what it pulls in (`ModernBertMLP`), modbuild renames them like everything else."""
    if produced is None:
        return False
    want = {n.id for n in ast.walk(expected) if isinstance(n, ast.Name)}
    got = {n.id for n in ast.walk(produced) if isinstance(n, ast.Name)}
    text = dump(expected)
    for old in want - got:
        new = next((n for n in got - want if _inserted(old, n)), None)
        if new is None:
            return False
        text = text.replace(f"'{old}'", f"'{new}'")
    return text == dump(produced)


def _inserted(old: str, new: str) -> bool:
    """`new` is `old` with one camel-case segment inserted (`ModernBertMLP` -> `ModernBertDecoderMLP`)."""
    extra = len(new) - len(old)
    return extra > 0 and any(
        new.startswith(old[:i]) and new.endswith(old[i:]) and new[i].isupper() for i in range(1, len(old) + 1)
    )


DELIBERATE: list[tuple[str, Predicate, str]] = [
    ("unused logger", _unused_logger, "no dead code: a definition nothing in the file uses is not emitted"),
    ("python binding", _python_binding, "super() arguments are bound as Python binds them"),
    ("extended prefix", _extended_prefix, "one prefix rename everywhere, also when the child's extends the parent's"),
]


@dataclass
class Modular:
    path: Path  # in the installed package
    model: str  # from the file name: modular_<model>.py (data2vec/ holds modular_data2vec_audio.py)
    parents: set[str] = field(default_factory=set)  # directories under models/ it imports from
    reads: set[Path] = field(default_factory=set)  # parent files it imports, installed location
    outputs: dict[str, str] = field(default_factory=dict)  # expected file, relative to models/ -> HF text

    @property
    def directory(self) -> str:
        return self.path.parent.name


@dataclass
class Run:
    mode: str
    models: Path  # models/ of this run's copy of the tree
    command: str = ""
    wall: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)  # files mode: per modular model
    crashes: dict[str, str] = field(default_factory=dict)  # model -> first line of the message
    refusals: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)  # batch: models not converted because a parent failed
    warnings: Counter = field(default_factory=Counter)  # model -> warnings printed while converting it
    note: str = ""
    summary: str = ""  # the CLI's closing line (converted, unchanged, failed)
    converted: int = 0  # modular files given to the converter (with --only: plus the parents they need)


@dataclass
class Definition:
    model: str
    file: str
    kind: str
    name: str
    status: str  # equal | differs | missing | extra
    why: str = ""  # for differs: ordering | deliberate:<name> | bug
    expected: ast.AST | None = None
    produced: ast.AST | None = None

    def row(self) -> dict:
        return {k: getattr(self, k) for k in ("model", "file", "kind", "name", "status", "why")}


@dataclass
class Comparison:
    definitions: list[Definition] = field(default_factory=list)
    produced: list[str] = field(default_factory=list)
    not_produced: list[str] = field(default_factory=list)
    unparsable: list[str] = field(default_factory=list)
    order_differs: list[str] = field(default_factory=list)  # shared definitions in another order
    same_set_order_differs: list[str] = field(default_factory=list)  # identical name sets, other order


# ---------------------------------------------------------------- corpus discovery


def installed_package() -> Path:
    """The transformers package directory, found without importing it (that takes seconds)."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        sys.exit("transformers is not installed in this environment")
    return Path(spec.origin).parent


def tree_package(tree: Path) -> Path:
    """The transformers package directory inside an unpacked wheel, a checkout (src/) or the package itself."""
    for candidate in (tree, tree / "transformers", tree / "src" / "transformers"):
        if (candidate / "models").is_dir() and (candidate / "__init__.py").is_file():
            return candidate.resolve()
    sys.exit(f"{tree}: no transformers package here (looked for models/ in it, transformers/ and src/transformers/)")


def wheel_package(wheel: Path, dest: Path) -> Path:
    """Unpack a transformers wheel under dest (a zip archive; nothing is installed) and return its package."""
    if not zipfile.is_zipfile(wheel):
        sys.exit(f"{wheel}: not a wheel (zip archive)")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(dest)
    return tree_package(dest)


def _import_targets(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(parent directory, modules or names imported from it) for each parent-model import."""
    found = []
    prefix = PACKAGE.split(".")
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        parts = (node.module or "").split(".")
        if node.level == 0 and parts[: len(prefix)] == prefix and len(parts) > len(prefix):
            parts = parts[len(prefix) :]  # absolute: transformers.models.<p>[.<module>]
        elif node.level != 2 or not parts[0]:
            continue
        names = parts[1:2] if len(parts) > 1 else [a.name for a in node.names]
        found.append((parts[0], names))
    return found


def _is_generated_from(path: Path, modular: Path) -> bool:
    with path.open(encoding="utf-8") as handle:
        head = "".join(line for _, line in zip(range(15), handle))
    return HEADER in head and modular.name in head


def discover(package: Path) -> list[Modular]:
    """Every modular file, its parents and the files it reads, and its expected outputs (HF's text)."""
    models = package / "models"
    corpus = []
    for path in sorted(models.glob("*/modular_*.py")):
        item = Modular(path, path.stem.removeprefix("modular_"))
        for parent, names in _import_targets(ast.parse(path.read_text(encoding="utf-8"))):
            if parent == item.directory:
                continue
            item.parents.add(parent)
            item.reads.update(f for n in names if (f := models / parent / f"{n}.py").is_file())
        for sibling in sorted(path.parent.glob("*.py")):
            if sibling != path and _is_generated_from(sibling, path):
                item.outputs[f"{item.directory}/{sibling.name}"] = sibling.read_text(encoding="utf-8")
        corpus.append(item)
    return corpus


def parents_first(corpus: list[Modular]) -> list[Modular]:
    """Topological order over imports between modular files; ties by name."""
    by_dir: dict[str, list[Modular]] = {}
    for item in corpus:
        by_dir.setdefault(item.directory, []).append(item)
    graph = nx.DiGraph()
    graph.add_nodes_from(item.model for item in corpus)
    for item in corpus:
        for parent in item.parents:
            graph.add_edges_from((p.model, item.model) for p in by_dir.get(parent, []) if p is not item)
    try:
        order = list(nx.lexicographical_topological_sort(graph))
    except nx.NetworkXUnfeasible:
        print("warning: import cycle between modular files; converting by name", file=sys.stderr)
        order = sorted(graph)
    by_model = {item.model: item for item in corpus}
    return [by_model[m] for m in order]


def select(corpus: list[Modular], only: list[str]) -> tuple[list[Modular], set[str]]:
    """(files to convert: the listed models plus the modular parents they need, models to compare)."""
    if not only:
        return corpus, {item.model for item in corpus}
    wanted = {item.model for item in corpus if item.model in only or item.directory in only}
    unknown = set(only) - wanted - {item.directory for item in corpus}
    if unknown:
        sys.exit(f"no modular file for: {', '.join(sorted(unknown))}")
    needed, todo = set(), list(wanted)
    while todo:  # parents of parents, as long as they have a modular file themselves
        model = todo.pop()
        needed.add(model)
        item = next(i for i in corpus if i.model == model)
        todo += [p.model for p in corpus if p.directory in item.parents and p.model not in needed]
    return [item for item in corpus if item.model in needed], wanted


# ---------------------------------------------------------------- running the converter


def copy_tree(package: Path, dest: Path) -> Path:
    """A private copy of the whole package; returns its models/ directory."""
    shutil.copytree(package, dest / "transformers", ignore=shutil.ignore_patterns("__pycache__"))
    return dest / "transformers" / "models"


def _cli(args: list[str], timeout: float) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, wall seconds) of one `modbuild convert`; a hang counts as a crash."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "modbuild.cli", "convert", *args],
            cwd=SRC,  # `python -m` puts the cwd first on sys.path: this checkout's modbuild runs
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,  # a failing conversion is a result, not an error
        )
    except subprocess.TimeoutExpired:
        return -1, "", f"{TRACEBACK}\nTimeoutExpired: no exit after {timeout:.0f} s", time.perf_counter() - start
    return done.returncode, done.stdout, done.stderr, time.perf_counter() - start


def _diagnostics(stderr: str) -> tuple[list[str], list[str]]:
    """(clean `path:line: message` errors, `path:line: XWarning: ...` warnings) in stderr."""
    matches = [(line, m) for line in stderr.splitlines() if (m := ERROR_LINE.match(line))]
    errors = [line for line, m in matches if not WARNING.match(m["msg"])]
    return errors, [line for line, m in matches if WARNING.match(m["msg"])]


def classify_failure(code: int, stderr: str) -> tuple[str, str]:
    """("ok" | "refusal" | "crash", first line of the message)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if TRACEBACK in stderr:
        return "crash", lines[-1].strip()  # the exception line says more than "Traceback ..."
    errors, warned = _diagnostics(stderr)
    if code == 0:
        return "ok", ""
    if errors or warned:  # a nonzero exit with only warnings: the warnings are the refusal
        return "refusal", (errors or warned)[0]
    return "crash", lines[0] if lines else f"exit {code} with no message"


def _explicit_args(models: Path, files: list[Path]) -> list[str]:
    return [*map(str, files), "--root", str(models), "--out", str(models), "--package", PACKAGE, "--force"]


def run_batch(models: Path, todo: list[Modular], whole: bool, timeout: float) -> Run:
    """One invocation: the directory form if the CLI has it, else every modular file on one line."""
    run = Run("batch", models, converted=len(todo))
    files = [models / item.directory / item.path.name for item in todo]
    attempts = [[str(models), "--force", "-j", "2"]] if whole else []  # the directory form converts all
    attempts.append(_explicit_args(models, files))
    for args in attempts:
        code, stdout, stderr, wall = _cli(args, timeout)
        if code == 2 and ("unrecognized arguments" in stderr or stderr.startswith("usage:")):
            run.note = "CLI lacks directory/-j support: fell back to explicit files"
            continue  # argparse refused before writing anything
        break
    run.command = "modbuild convert " + (" ".join(args) if len(args) < 10 else f"<{len(files)} files> {args[-7:]}")
    run.wall = wall
    run.summary = next((x for x in reversed(stdout.splitlines()) if x.startswith("modbuild convert:")), "")
    by_path = {str(models / item.directory / item.path.name): item.model for item in todo}
    errors, warned = _diagnostics(stderr)
    for line in errors:  # attribute each clean error to its modular file
        if (path := ERROR_LINE.match(line)["path"]) in by_path:
            target = run.blocked if BLOCKED in line else run.refusals
            target.setdefault(by_path[path], line)
    run.warnings.update(by_path.get(ERROR_LINE.match(line)["path"], "?") for line in warned)
    if TRACEBACK in stderr or (code != 0 and not run.refusals):
        run.crashes["<batch>"] = classify_failure(code, stderr)[1] or f"exit {code}"
    return run


def run_files(models: Path, todo: list[Modular], timeout: float) -> Run:
    """One subprocess per modular file, parents first; a crash moves on to the next file."""
    run = Run("files", models, converted=len(todo))
    start = time.perf_counter()
    for item in todo:
        code, _, stderr, seconds = _cli(_explicit_args(models, [models / item.directory / item.path.name]), timeout)
        run.seconds[item.model] = seconds
        verdict, message = classify_failure(code, stderr)
        run.warnings[item.model] += len(_diagnostics(stderr)[1])
        if verdict == "crash":
            run.crashes[item.model] = message
        elif verdict == "refusal":
            run.refusals[item.model] = message
        print(f"  {item.model:<28} {seconds:6.2f} s  {verdict}", file=sys.stderr, flush=True)
    run.wall = time.perf_counter() - start
    run.command = f"modbuild convert <one file> {_explicit_args(models, [])}  (x{len(todo)})"
    return run


# ---------------------------------------------------------------- comparing definitions


_dump = dump


def _ordering_only(expected: ast.AST, produced: ast.AST) -> bool:
    """Same class header and the same member statements, in another order."""
    if not (isinstance(expected, ast.ClassDef) and isinstance(produced, ast.ClassDef)):
        return False
    bare_e, bare_p = copy.copy(expected), copy.copy(produced)
    bare_e.body = bare_p.body = []
    return _dump(bare_e) == _dump(bare_p) and sorted(map(_dump, expected.body)) == sorted(map(_dump, produced.body))


def why_differs(model: str, kind: str, name: str, expected: ast.AST, produced: ast.AST) -> str:
    if _ordering_only(expected, produced):
        return "ordering"
    for label, predicate, _ in DELIBERATE:
        if predicate(model, kind, name, expected, produced):
            return f"deliberate:{label}"
    return "bug"


def _kind(rel: str, model: str) -> str:
    """modeling_gemma.py -> modeling; image_processing_x_fast.py -> image_processing_fast."""
    return Path(rel).stem.replace(f"_{model}", "", 1)


def compare_file(model: str, rel: str, expected_text: str, produced_text: str | None, out: Comparison) -> None:
    """Append one Definition per expected (and extra produced) name; None means not produced."""
    kind, expected = _kind(rel, model), definitions(expected_text)
    produced: dict[str, ast.AST] = {}
    if produced_text is not None:
        try:
            produced = definitions(produced_text)
        except SyntaxError:
            out.unparsable.append(rel)  # its definitions all count as missing
    for name, node in expected.items():
        other = produced.get(name)
        if other is None:
            why = next(
                (f"deliberate:{label}" for label, test, _ in DELIBERATE if test(model, kind, name, node, None)), ""
            )
            out.definitions.append(Definition(model, rel, kind, name, "missing", why, expected=node))
        elif _dump(node) == _dump(other):
            out.definitions.append(Definition(model, rel, kind, name, "equal"))
        else:
            why = why_differs(model, kind, name, node, other)
            out.definitions.append(Definition(model, rel, kind, name, "differs", why, node, other))
    for name in produced.keys() - expected.keys():
        out.definitions.append(Definition(model, rel, kind, name, "extra", produced=produced[name]))
    shared_e = [n for n in expected if n in produced]
    shared_p = [n for n in produced if n in expected]
    if shared_e != shared_p:
        out.order_differs.append(rel)
        if expected.keys() == produced.keys():
            out.same_set_order_differs.append(rel)


def compare(run: Run, corpus: list[Modular], compared: set[str]) -> Comparison:
    """Every expected file of the compared models against the file at the same path in the run's tree."""
    out = Comparison()
    for item in corpus:
        if item.model not in compared:
            continue
        for rel, expected_text in item.outputs.items():
            target = run.models / rel
            text = target.read_text(encoding="utf-8") if target.is_file() else None
            if text == expected_text:
                text = None  # untouched copy of HF's file (an identical rewrite is indistinguishable)
            (out.produced if text is not None else out.not_produced).append(rel)
            compare_file(item.model, rel, expected_text, text, out)
    return out


# ---------------------------------------------------------------- timing


def parse_seconds(todo: list[Modular]) -> tuple[float, int]:
    """libcst parse time of every distinct input (modular files + parent files they read), once each."""
    inputs = sorted({item.path for item in todo} | {f for item in todo for f in item.reads})
    texts = [f.read_text(encoding="utf-8") for f in inputs]
    start = time.perf_counter()
    for text in texts:
        libcst.parse_module(text)
    return time.perf_counter() - start, len(inputs)


# ---------------------------------------------------------------- report


def _statuses(comp: Comparison) -> Counter:
    counts = Counter(d.status for d in comp.definitions)
    counts.update(f"why:{d.why.split(':')[0]}" for d in comp.definitions if d.status == "differs")
    counts["missing:deliberate"] = sum(
        d.status == "missing" and d.why.startswith("deliberate") for d in comp.definitions
    )
    counts.update(f"label:{d.why.split(':', 1)[1]}" for d in comp.definitions if d.why.startswith("deliberate:"))
    return counts


def print_counts(run: Run, comp: Comparison, n_modular: int) -> None:
    expected = len(comp.produced) + len(comp.not_produced)
    c = _statuses(comp)
    n_def = c["equal"] + c["differs"] + c["missing"]
    print(f"\n== {run.mode} mode: {run.command}")
    if run.note:
        print(f"   ({run.note})")
    if run.summary:
        print(f"   {run.summary[:300]}{' ...' if len(run.summary) > 300 else ''}")
    print(
        f"modular files {n_modular}, expected outputs {expected}, produced {len(comp.produced)} "
        f"({100 * len(comp.produced) / max(expected, 1):.1f}%), not produced {len(comp.not_produced)}, "
        f"unparsable {len(comp.unparsable)}"
    )
    warned = +run.warnings
    print(
        f"of {run.converted} modular files converted: crashes {len(run.crashes)}, refusals {len(run.refusals)}, "
        f"not converted because a parent failed {len(run.blocked)}; "
        f"warnings {sum(warned.values())} in {len(warned)} models (not failures)"
    )
    print(
        f"definitions: expected {n_def}, equal {c['equal']}, differs {c['differs']} (ordering only "
        f"{c['why:ordering']}, deliberate {c['why:deliberate']}, bug {c['why:bug']}), missing {c['missing']} "
        f"(deliberate {c['missing:deliberate']}), extra {c['extra']}; equal rate {100 * c['equal'] / max(n_def, 1):.1f}%"
    )
    labels = {k[len("label:") :]: v for k, v in c.items() if k.startswith("label:")}
    if labels:
        print("deliberate differences (docs/modular.md): " + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    print(
        f"files whose shared top-level definitions come in another order: {len(comp.order_differs)} "
        f"(same definition set, other order: {len(comp.same_set_order_differs)})"
    )


def _normalised(message: str) -> str:
    """A failure message without its path:line and quoted names, so alike failures group together."""
    match = ERROR_LINE.match(message)
    text = match["msg"] if match else message
    return re.sub(r"(?<!\w)'[^'\s]*'|`[^`]*`", "'…'", text)  # (?<!\w): not the apostrophe of "parent's"


def print_failures(run: Run, top: int = 10) -> None:
    for label, failures in (("crashes", run.crashes), ("refusals", run.refusals)):
        if not failures:
            continue
        groups = Counter(_normalised(m) for m in failures.values())
        print(f"\n{run.mode} {label} by message ({len(failures)}):")
        for message, count in groups.most_common(top):
            example = next(f"{k}: {m}" for k, m in sorted(failures.items()) if _normalised(m) == message)
            print(f"  {count:>3}  {message[:100]}\n         e.g. {example[:160]}")


def print_timing(runs: dict[str, Run], parse: float, n_inputs: int) -> None:
    print("\n== timing")
    print(f"libcst parse of {n_inputs} inputs (modular + parent files): {parse:.2f} s")
    if "batch" in runs:
        batch = runs["batch"]
        print(f"batch wall for the corpus: {batch.wall:.2f} s; batch / parse = {batch.wall / parse:.1f}x")
    if "files" in runs and runs["files"].seconds:
        secs = list(runs["files"].seconds.values())
        print(
            f"files mode: {len(secs)} subprocesses, total {sum(secs):.1f} s, mean {statistics.mean(secs):.2f} s, "
            f"median {statistics.median(secs):.2f} s, max {max(secs):.2f} s "
            f"({max(runs['files'].seconds, key=runs['files'].seconds.get)}); "
            f"sum / parse = {sum(secs) / parse:.1f}x"
        )


def per_model(run: Run, comp: Comparison) -> list[dict]:
    rows: dict[str, Counter] = {}
    for d in comp.definitions:
        rows.setdefault(d.model, Counter())[d.status] += 1
    table = []
    for model, c in rows.items():
        state = "crash" if model in run.crashes else "refused" if model in run.refusals else ""
        table.append({"model": model, **{k: c[k] for k in ("equal", "differs", "missing", "extra")}, "run": state})
    return sorted(table, key=lambda r: (-(r["differs"] + r["missing"]), r["model"]))


def print_table(table: list[dict], failures: dict[str, str], top: int = 20) -> None:
    print(f"\n== models with the most non-equal definitions (top {top})")
    print(f"{'model':<28}{'equal':>6}{'differs':>8}{'missing':>8}{'extra':>6}  run")
    for r in table[:top]:
        message = failures.get(r["model"], "")
        match = ERROR_LINE.match(message)
        state = f"{r['run']}: {match['msg'] if match else message}"[:80] if r["run"] else ""
        print(f"{r['model']:<28}{r['equal']:>6}{r['differs']:>8}{r['missing']:>8}{r['extra']:>6}  {state}")


def _clip(text: str, lines: int = 40) -> list[str]:
    out = text.splitlines()
    return out[:lines] + ([f"... ({len(out) - lines} more lines)"] if len(out) > lines else [])


def print_bugs(comp: Comparison, show: int) -> None:
    bugs = [d for d in comp.definitions if d.why == "bug"]
    print(
        f"\n== first {min(show, len(bugs))} of {len(bugs)} bug differences (expected -> produced, docstrings stripped)"
    )
    for d in bugs[:show]:
        expected, produced = _clip(ast.unparse(d.expected)), _clip(ast.unparse(d.produced))
        diff = list(difflib.unified_diff(expected, produced, f"HF {d.file}", f"modbuild {d.file}", n=1, lineterm=""))
        print(f"\n--- {d.file} :: {d.name}")
        print("\n".join(_clip("\n".join(diff[2:]))))


def mode_changes(a: Comparison, b: Comparison) -> int:
    """Definitions whose status or cause is not the same in both modes (they should agree)."""
    left = {(d.file, d.name): (d.status, d.why) for d in a.definitions}
    right = {(d.file, d.name): (d.status, d.why) for d in b.definitions}
    return sum(left.get(k) != right.get(k) for k in left.keys() | right.keys())


def write_json(path: Path, runs: dict[str, Run], comps: dict[str, Comparison], timing: dict, n_modular: int) -> None:
    data: dict = {"modular_files": n_modular, "timing": timing, "modes": {}}
    for mode, run in runs.items():
        comp = comps[mode]
        data["modes"][mode] = {
            "command": run.command,
            "note": run.note,
            "wall": run.wall,
            "seconds_per_file": run.seconds,
            "crashes": run.crashes,
            "refusals": run.refusals,
            "blocked": run.blocked,
            "warnings": dict(+run.warnings),
            "produced": comp.produced,
            "not_produced": comp.not_produced,
            "unparsable": comp.unparsable,
            "order_differs": comp.order_differs,
            "same_set_order_differs": comp.same_set_order_differs,
            "counts": dict(_statuses(comp)),
            "per_model": per_model(run, comp),
            "definitions": [d.row() for d in comp.definitions],
        }
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["all", "batch", "files"], default="all")
    parser.add_argument("--only", default="", help="comma-separated models (their modular parents are converted too)")
    parser.add_argument("--show", type=int, default=15, help="bug differences to print as diffs")
    parser.add_argument("--json", type=Path, help="write every number and per-definition result here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and print its path")
    parser.add_argument("--src", type=Path, default=ROOT, help="directory holding the modbuild package to run")
    corpus = parser.add_mutually_exclusive_group()
    corpus.add_argument("--wheel", type=Path, help="a transformers wheel to unpack and convert (not installed)")
    corpus.add_argument("--tree", type=Path, help="an unpacked transformers tree (default: the installed package)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before one invocation counts as a crash")
    return parser.parse_args(argv)


def corpus_package(args: argparse.Namespace, tmp: Path) -> Path:
    if args.wheel:
        return wheel_package(args.wheel, tmp / "wheel")
    return tree_package(args.tree) if args.tree else installed_package()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    global SRC
    SRC = args.src.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="hf_corpus_"))
    runs: dict[str, Run] = {}
    try:
        package = corpus_package(args, tmp)
        print(f"corpus: {package}", file=sys.stderr, flush=True)
        corpus = parents_first(discover(package))  # reads HF's expected text before any copy is overwritten
        todo, compared = select(corpus, [m for m in args.only.split(",") if m])
        parse, n_inputs = parse_seconds(todo)
        for mode in ["batch", "files"] if args.mode == "all" else [args.mode]:
            models = copy_tree(package, tmp / mode)  # a fresh tree per mode
            print(f"{mode}: converting {len(todo)} modular files in {models}", file=sys.stderr, flush=True)
            if mode == "batch":
                runs[mode] = run_batch(models, todo, whole=not args.only, timeout=args.timeout * 10)
            else:
                runs[mode] = run_files(models, todo, args.timeout)
        comps = {mode: compare(run, corpus, compared) for mode, run in runs.items()}
    finally:
        if args.keep:
            print(f"temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    n_modular = len(compared)
    for mode, run in runs.items():
        print_counts(run, comps[mode], n_modular)
        print_failures(run)
    if len(comps) == 2:
        print(
            f"\ndefinitions whose result differs between batch and files mode: "
            f"{mode_changes(comps['files'], comps['batch'])}"
        )
    print_timing(runs, parse, n_inputs)
    main_mode = "files" if "files" in runs else "batch"
    print_table(per_model(runs[main_mode], comps[main_mode]), {**runs[main_mode].crashes, **runs[main_mode].refusals})
    print_bugs(comps[main_mode], args.show)
    if args.json:
        timing = {"parse": parse, "inputs": n_inputs, **{f"{m}_wall": r.wall for m, r in runs.items()}}
        write_json(args.json, runs, comps, timing, n_modular)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
