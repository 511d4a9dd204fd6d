"""Benchmark the build around the converter on a synthetic family of modular models.

    python bench/build.py [--models N] [--seed S] [--keep] [--profile]

Generates N pure-Python modular models (no paddle) in a temporary tree: several roots, a chain of
depth >= 8, a "mistral" with 100+ descendants (for N=300), some models with two parents. Then runs
the real `doit convert` (subprocesses, the real converter) and prints:

- full build time with `-n 1`, and with `-n 2` on a copy (speedup; target >= 1.6x on a wide DAG),
- no-op rebuild wall time (target <= 0.5 s),
- edit one leaf: models rebuilt (must be 1),
- edit one root: models rebuilt (must be the root and its descendants).

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import networkx as nx

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

ROOT_TEMPLATE = '''\
"""{C}: a root model, a pure-Python stand-in for an LLM definition."""

import math

{U}_DEFAULT_EPS = 1e-6


def {m}_rotate_half(x):
    half = len(x) // 2
    return [-v for v in x[half:]] + list(x[:half])


class {C}Config:
    model_type = "{m}"

    def __init__(self, hidden_size=8, num_layers=2, eps={U}_DEFAULT_EPS, scale=1.0):
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.eps = eps
        self.scale = scale


class {C}RMSNorm:
    def __init__(self, config):
        self.eps = config.eps

    def forward(self, x):
        mean = sum(v * v for v in x) / len(x)
        return [v / math.sqrt(mean + self.eps) for v in x]


class {C}MLP:
    def __init__(self, config):
        self.config = config
        self.scale = config.scale

    def forward(self, x):
        return [v * self.scale for v in x]


class {C}Attention:
    def __init__(self, config):
        self.config = config
        self.bias = 0.0

    def forward(self, x):
        return [a + b + self.bias for a, b in zip(x, {m}_rotate_half(x))]


class {C}DecoderLayer:
    def __init__(self, config):
        self.norm = {C}RMSNorm(config)
        self.attn = {C}Attention(config)
        self.mlp = {C}MLP(config)

    def forward(self, x):
        h = self.attn.forward(self.norm.forward(x))
        return self.mlp.forward([a + b for a, b in zip(x, h)])


class {C}Model:
    config_class = {C}Config

    def __init__(self, config):
        self.config = config
        self.layers = [{C}DecoderLayer(config) for _ in range(config.num_layers)]

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x


class {C}ForCausalLM:
    def __init__(self, config):
        self.model = {C}Model(config)

    def forward(self, x):
        return sum(self.model.forward(x))
'''

CHILD_TEMPLATE = """\
from generated.{p}.configuration_{p} import {P}Config
from generated.{p}.modeling_{p} import {P}ForCausalLM, {P}MLP, {P}Model
{attention_import}


class {C}Config({P}Config):
    model_type = "{m}"


class {C}MLP({P}MLP):
    def forward(self, x):
        return [v * self.scale + {k} for v in x]


{attention}


class {C}Model({P}Model):
    pass


class {C}ForCausalLM({P}ForCausalLM):
    pass
"""

OWN_ATTENTION = """\
class {C}Attention({A}Attention):
    def __init__(self, config):
        super().__init__(config)
        self.bias = {k}.5"""

ROOTS = ["llama", "gptj", "bert", "falcon", "opt"]


def camel(model: str) -> str:
    return "".join(part.capitalize() for part in model.split("_"))


def name_of(i: int) -> str:
    """Distinct alphabetic names (a digit glued to a prefix would make the renamer skip it)."""
    letters = ""
    for _ in range(3):
        i, r = divmod(i, 26)
        letters = "abcdefghijklmnopqrstuvwxyz"[r] + letters
    return "m" + letters


def family(n: int, seed: int) -> nx.DiGraph:
    """A DAG like a model zoo: a few roots, mistral under llama with a deep chain and a big subtree."""
    rng = random.Random(seed)
    graph = nx.DiGraph()
    roots = ROOTS[: max(1, min(len(ROOTS), n // 20))]
    graph.add_nodes_from(roots)
    order = list(roots)
    if n > len(roots):
        graph.add_edge("llama", "mistral")
        order.append("mistral")
    chain = ["mistral"]
    under_mistral = ["mistral"] if "mistral" in graph else []  # mistral and its descendants
    i = 0
    while len(order) < n:
        name = name_of(i)
        i += 1
        if len(chain) < 9:  # llama -> mistral -> 8 more: depth 9
            parent = chain[-1]
            chain.append(name)
        else:
            pool = under_mistral if rng.random() < 0.45 else order
            # prefer models near the top of the pool: a wide DAG, like real families
            parent = pool[min(int(rng.expovariate(1 / 6)), len(pool) - 1)] if rng.random() < 0.6 else rng.choice(pool)
        graph.add_edge(parent, name)
        if rng.random() < 0.06 and len(order) > 10:  # a second parent, for the attention
            other = rng.choice([m for m in order if m != parent])
            graph.add_edge(other, name, attention=True)
        if any(p in under_mistral for p in graph.predecessors(name)):
            under_mistral.append(name)
        order.append(name)
    return graph


def modular_text(graph: nx.DiGraph, model: str, k: int) -> str:
    preds = list(graph.predecessors(model))
    if not preds:
        return ROOT_TEMPLATE.format(C=camel(model), m=model, U=model.upper())
    main = next(p for p in preds if not graph.edges[p, model].get("attention"))
    second = [p for p in preds if graph.edges[p, model].get("attention")]
    attn_parent = second[0] if second else main
    if second:
        attention_import = f"from generated.{attn_parent}.modeling_{attn_parent} import {camel(attn_parent)}Attention"
    else:
        attention_import = f"from generated.{main}.modeling_{main} import {camel(main)}Attention"
    return CHILD_TEMPLATE.format(
        p=main,
        P=camel(main),
        C=camel(model),
        m=model,
        k=k,
        attention_import=attention_import,
        attention=OWN_ATTENTION.format(C=camel(model), A=camel(attn_parent), k=k),
    )


def ideal_speedup(graph: nx.DiGraph, jobs: int) -> float:
    """Greedy list scheduling of unit-cost tasks on `jobs` workers: the best a -n `jobs` run can do."""
    indegree = {m: graph.in_degree(m) for m in graph}
    ready = sorted(m for m, d in indegree.items() if d == 0)
    steps = 0
    while ready:
        batch, ready = ready[:jobs], ready[jobs:]
        steps += 1
        for model in batch:
            for child in graph.successors(model):
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
    return graph.number_of_nodes() / steps


def write_tree(root: Path, graph: nx.DiGraph) -> None:
    (root / "generated").mkdir(parents=True)
    (root / "generated" / "__init__.py").write_text("")
    (root / "dodo.py").write_text(DODO)
    (root / "pyproject.toml").write_text(DOIT_PLUGINS)
    for k, model in enumerate(nx.topological_sort(graph)):
        path = root / "modular" / model / f"modular_{model}.py"
        path.parent.mkdir(parents=True)
        path.write_text(modular_text(graph, model, k))


CPU = {"last": 0.0}
ENV = dict(os.environ)


def freeze_modbuild(where: Path) -> None:
    """Run doit on a copy of modbuild: the converter's sources are file_dep of every model, so an edit
    to them in this checkout during the (minutes long) benchmark would rebuild everything."""
    import modbuild

    shutil.copytree(Path(modbuild.__file__).parent, where / "modbuild", ignore=shutil.ignore_patterns("__pycache__"))
    ENV["PYTHONPATH"] = os.pathsep.join(filter(None, [str(where), os.environ.get("PYTHONPATH")]))


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def doit(root: Path, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    """Run doit; wall time returned, CPU time (doit and everything it ran) left in CPU["last"]."""
    cpu, start = children_cpu(), time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "doit", *args], cwd=root, capture_output=True, text=True, env=ENV)
    elapsed = time.perf_counter() - start
    CPU["last"] = children_cpu() - cpu
    if result.returncode != 0:
        sys.exit(f"doit {' '.join(args)} failed in {root}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return elapsed, result


def rebuilt(result: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"^convert (\S+) +written$", result.stdout, flags=re.M))


def edit(root: Path, model: str, old: str, new: str) -> None:
    path = root / "modular" / model / f"modular_{model}.py"
    text = path.read_text()
    assert old in text, (model, old)
    path.write_text(text.replace(old, new, 1))


def profile_noop(root: Path) -> None:
    """Where the no-op time goes: interpreter, imports, then doit's own work (best of 3 each)."""

    def best(*argv: str) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, *argv], cwd=root, capture_output=True, env=ENV, check=True)
            times.append(time.perf_counter() - start)
        return min(times)

    startup = best("-c", "pass")
    networkx = best("-c", "import networkx")
    imports = best("-c", "import doit.doit_cmd, modbuild.tasks, modbuild.doit_graph")
    noop = best("-m", "doit", "convert")
    print("\nno-op run, best of 3:")
    print(f"  python startup                          {startup:.2f} s")
    print(
        f"  imports: doit, modbuild                 {imports - startup:.2f} s  "
        f"(networkx alone {networkx - startup:.2f} s)"
    )
    print(f"  load graph, create tasks, check, save   {noop - imports:.2f} s")
    print(f"  total                                   {noop:.2f} s")
    out = subprocess.run(
        [sys.executable, "-m", "cProfile", "-s", "cumulative", "-m", "doit", "convert"],
        cwd=root,
        capture_output=True,
        text=True,
        env=ENV,
    ).stdout
    keep = ("tasks.py", "project.py", "graph.py", "dependency.py:592", "loader.py:127", "runner.py:250", "dodo.py")
    rows = [line for line in out.splitlines() if any(k in line for k in keep) and "<listcomp>" not in line]
    header = next(line for line in out.splitlines() if "ncalls" in line)
    print("cProfile (cumulative; profiling inflates times):\n" + "\n".join([header, *rows[:16]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=300, help="number of models (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary trees and print where")
    parser.add_argument("--profile", action="store_true", help="profile a no-op run")
    args = parser.parse_args()

    graph = family(args.models, args.seed)
    roots = [m for m in graph if graph.in_degree(m) == 0]
    depth = nx.dag_longest_path_length(graph)
    mistral = len(nx.descendants(graph, "mistral")) if "mistral" in graph else 0
    two = sum(1 for m in graph if graph.in_degree(m) == 2)
    widths = [len(layer) for layer in nx.topological_generations(graph)]
    print(
        f"family: {graph.number_of_nodes()} models, {len(roots)} roots, depth {depth}, mistral has "
        f"{mistral} descendants, {two} models with two parents, layer widths {widths}"
    )
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, python {sys.version.split()[0]}")

    tmp = Path(tempfile.mkdtemp(prefix="modbuild-bench-"))
    try:
        freeze_modbuild(tmp / "src")
        one, two_jobs = tmp / "n1", tmp / "n2"
        write_tree(one, graph)
        shutil.copytree(one, two_jobs)

        t1, result = doit(one, "-n", "1", "convert")
        assert len(rebuilt(result)) == len(graph), "full build did not convert every model"
        c1 = CPU["last"]
        print(
            f"full build  -n 1: {t1:7.2f} s  ({t1 / len(graph) * 1000:.0f} ms/model; "
            f"{c1:.1f} s CPU = {c1 / t1:.2f} CPUs busy)"
        )
        t2, result = doit(two_jobs, "-n", "2", "convert")
        assert len(rebuilt(result)) == len(graph)
        c2 = CPU["last"]
        print(
            f"full build  -n 2: {t2:7.2f} s  speedup {t1 / t2:.2f}x (target >= 1.6x; "
            f"{c2:.1f} s CPU = {c2 / t2:.2f} CPUs busy)"
        )
        print(f"  ideal -n 2 speedup for this DAG (unit cost per model, 2 free CPUs): {ideal_speedup(graph, 2):.2f}x")
        same = all(
            (one / p.relative_to(two_jobs)).read_bytes() == p.read_bytes() for p in two_jobs.glob("generated/*/*.py")
        )
        print(f"  -n 2 output identical to -n 1: {same}")

        times, cpus = [], []
        for _ in range(5):
            t, result = doit(one, "convert")
            times.append(t)
            cpus.append(CPU["last"])
            assert not rebuilt(result), f"no-op run rebuilt {sorted(rebuilt(result))}"
        print(
            f"no-op rebuild:    {statistics.median(times):7.2f} s  median of 5 (min {min(times):.2f} s; "
            f"target <= 0.5 s; {statistics.median(cpus):.2f} s CPU), 0 models rebuilt"
        )

        leaves = sorted(m for m in graph if graph.out_degree(m) == 0 and graph.in_degree(m) > 0)
        leaf = leaves[len(leaves) // 2]
        edit(one, leaf, "return [v * self.scale + ", "return [v * self.scale * 2 + ")
        t, result = doit(one, "convert")
        print(f"edit one leaf:    {t:7.2f} s  rebuilt {len(rebuilt(result))} model(s) (expected 1: {leaf})")

        # the smallest root that has descendants, so the figure is not just another full build
        root = min((m for m in roots if graph.out_degree(m)), key=lambda m: len(nx.descendants(graph, m)))
        expected = {root} | nx.descendants(graph, root)
        # RMSNorm is inherited unchanged by every descendant, so the change reaches all of them
        edit(one, root, "math.sqrt(mean + self.eps)", "math.sqrt(mean + 2 * self.eps)")
        t, result = doit(one, "convert")
        got = rebuilt(result)
        verdict = (
            "exactly"
            if got == expected
            else f"MISMATCH: extra {sorted(got - expected)}, missing {sorted(expected - got)}"
        )
        print(
            f"edit one root:    {t:7.2f} s  rebuilt {len(got)} model(s), "
            f"expected {len(expected)} ({root} + descendants): {verdict}"
        )

        # an extra blank line between two methods: ruff formats it away
        ws = "        self.scale = config.scale\n\n    def forward"
        edit(one, root, ws, "        self.scale = config.scale\n\n\n    def forward")
        t, result = doit(one, "convert")
        print(
            f"format-only edit: {t:7.2f} s  rebuilt {sorted(rebuilt(result))} (expected just {root}: output identical)"
        )

        t, _ = doit(one, "check")
        print(f"doit check:       {t:7.2f} s  (converts every model in memory)")
        if args.profile:
            profile_noop(one)
    finally:
        if args.keep:
            print(f"trees kept in {tmp}")
        else:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
