"""The model family graph: discovery from imports, errors, DOT output and `doit graph`."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import networkx as nx
import pytest
from synthetic import FAMILY, write_tree

from modbuild.graph import GraphError, discover, layers, load, to_dot
from modbuild.project import Project


def stub(*imports: str) -> str:
    """A modular file that only imports (the graph never looks further)."""
    return "".join(f"{line}\n" for line in imports) + "\n\nclass X:\n    pass\n"


def parse_dot(text: str) -> tuple[set[str], set[tuple[str, str]]]:
    nodes = set(re.findall(r'^\s*"([^"]+)";$', text, flags=re.M))
    edges = set(re.findall(r'^\s*"([^"]+)" -> "([^"]+)";$', text, flags=re.M))
    return nodes, edges


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("family"), FAMILY, dodo=False)


def test_single_parents(family):
    models = discover(family / "modular")
    assert sorted(models) == ["base", "child1", "child2", "grand", "solo"]
    parents = {name: set(m.parents) for name, m in models.items()}
    assert parents == {"base": set(), "child1": {"base"}, "grand": {"child1"}, "child2": {"base"}, "solo": set()}
    # where the first import of each parent is, for error messages
    path, line = models["grand"].parents["child1"]
    assert path == family / "modular" / "grand" / "modular_grand.py" and line == 1


def test_relative_import_makes_an_edge(family):
    # child2 imports `from ..base.modeling_base import ...`
    assert "from ..base.modeling_base" in (family / "modular" / "child2" / "modular_child2.py").read_text()
    _, graph = load(family / "modular")
    assert graph.has_edge("base", "child2")


def test_build_order_and_layers(family):
    project = Project(family)
    order = project.build_order()
    assert order.index("base") < order.index("child1") < order.index("grand")
    assert order.index("base") < order.index("child2")
    assert layers(project.graph) == [["base", "solo"], ["child1", "child2"], ["grand"]]


def test_multiple_parents_and_import_forms(tmp_path):
    write_tree(
        tmp_path,
        {
            "a": stub(),
            "b": stub(),
            "c": stub("import generated.a.modeling_a"),
            "mix": stub(
                "from generated.a.modeling_a import AMLP",
                "from ..b.configuration_b import BConfig",
                "from generated.c import modeling_c",
            ),
        },
        dodo=False,
    )
    models, graph = load(tmp_path / "modular")
    assert set(models["mix"].parents) == {"a", "b", "c"}
    assert set(graph.predecessors("mix")) == {"a", "b", "c"}
    assert set(models["c"].parents) == {"a"}
    # a model importing its own generated package is an error of that model (issue 19):
    # tests/test_converter_errors.py::test_a_self_import_is_a_graph_error_of_that_model
    order = Project(tmp_path).build_order()
    assert max(order.index(p) for p in "abc") < order.index("mix")


NESTED = """\
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from generated.a.modeling_a import AMLP
try:
    from generated.b.modeling_b import BMLP
except ImportError:
    from generated.c.modeling_c import CMLP


class XConfig:
    def f(self):
        import generated.d.modeling_d

        return generated.d.modeling_d
"""


def test_imports_in_nested_blocks_make_edges(tmp_path):
    write_tree(tmp_path, {"a": stub(), "b": stub(), "c": stub(), "d": stub(), "x": NESTED}, dodo=False)
    models = discover(tmp_path / "modular")
    lines = {parent: line for parent, (_, line) in models["x"].parents.items()}
    assert lines == {"a": 4, "b": 6, "c": 8, "d": 13}
    assert models["x"].defines_config and not models["a"].defines_config


def test_non_model_imports_are_not_edges(tmp_path):
    write_tree(tmp_path, {"a": stub("import os", "from . import x", "from modbuild.nn import parallel")}, dodo=False)
    _, graph = load(tmp_path / "modular")
    assert list(graph.edges) == []


def test_cycle_is_named(tmp_path):
    # a imports b, b imports c, c imports a: edges b -> a, c -> b, a -> c
    write_tree(
        tmp_path,
        {
            "a": stub("from generated.b.modeling_b import BMLP"),
            "b": stub('"""doc"""', "from generated.c.modeling_c import CMLP"),
            "c": stub("from generated.a.modeling_a import AMLP"),
            "d": stub("from generated.a.modeling_a import AMLP"),
        },
        dodo=False,
    )
    with pytest.raises(GraphError) as info:
        load(tmp_path / "modular")
    message = str(info.value)
    match = re.match(r"import cycle: (\w+(?: -> \w+)+) \((.*)\)$", message)
    assert match, message
    chain = match.group(1).split(" -> ")
    assert chain[0] == chain[-1] and sorted(chain[:-1]) == ["a", "b", "c"]
    cycle_edges = set(zip(chain, chain[1:]))
    assert cycle_edges == {("b", "a"), ("c", "b"), ("a", "c")}
    # each edge names the import that makes it
    for where in ("modular_a.py:1", "modular_b.py:2", "modular_c.py:1"):
        assert where in match.group(2)


def test_missing_model_names_path_and_line(tmp_path):
    write_tree(
        tmp_path, {"a": stub("import math", "", "from generated.nope.modeling_nope import NopeMLP")}, dodo=False
    )
    with pytest.raises(GraphError) as info:
        load(tmp_path / "modular")
    assert str(info.value) == f"{tmp_path / 'modular' / 'a' / 'modular_a.py'}:3: imports unknown model 'nope'"


def test_syntax_error_names_path_and_line(tmp_path):
    write_tree(tmp_path, {"a": "x = 1\ndef broken(:\n    pass\n"}, dodo=False)
    with pytest.raises(GraphError, match=r"modular_a\.py:2: syntax error"):
        load(tmp_path / "modular")


def test_directories_without_a_modular_file_are_not_models(tmp_path):
    write_tree(tmp_path, {"a": stub()}, dodo=False)
    (tmp_path / "modular" / "empty").mkdir()
    (tmp_path / "modular" / "notes.txt").write_text("x")
    assert list(discover(tmp_path / "modular")) == ["a"]


def test_dot_round_trip(family):
    _, graph = load(family / "modular")
    nodes, edges = parse_dot(to_dot(graph))
    assert nodes == set(graph.nodes)
    assert edges == set(graph.edges)


def test_dot_quotes_odd_names():
    graph = nx.DiGraph([("a-b", "c:d"), ("c:d", "e f")])
    nodes, edges = parse_dot(to_dot(graph))
    assert nodes == {"a-b", "c:d", "e f"} and edges == set(graph.edges)


def run_graph(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "doit", "graph", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_doit_graph_dot_prints_the_graph_edges(family, tmp_path):
    _, graph = load(family / "modular")
    by_root = run_graph("--dot", "--root", str(family), cwd=tmp_path)  # no dodo.py needed
    assert by_root.returncode == 0, by_root.stderr
    assert parse_dot(by_root.stdout) == (set(graph.nodes), set(graph.edges))
    in_tree = run_graph("--dot", cwd=family)
    assert in_tree.stdout == by_root.stdout


def test_doit_graph_layers_and_files(family, tmp_path):
    shown = run_graph("--root", str(family), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == ["0: base solo", "1: child1 child2", "2: grand"]
    written = run_graph("--root", str(family), "-o", str(tmp_path / "g.dot"), cwd=tmp_path)
    assert written.returncode == 0 and written.stdout == ""
    assert (tmp_path / "g.dot").read_text() == to_dot(load(family / "modular")[1])
    svg = run_graph("--root", str(family), "-o", str(tmp_path / "g.svg"), cwd=tmp_path)
    assert svg.returncode == 0, svg.stderr  # graphviz's dot, or matplotlib without it
    drawn = (tmp_path / "g.svg").read_text()
    assert "<svg" in drawn and all(name in drawn for name in load(family / "modular")[1].nodes)


def test_the_svg_needs_no_graphviz(family):
    """Drawn from the graph with matplotlib: every model named as text, the same bytes whatever the hash seed."""
    draw = (
        "import sys; from pathlib import Path; from modbuild.graph import load; from modbuild.graph_svg import draw_svg; "
        "sys.stdout.write(draw_svg(load(Path(sys.argv[1]))[1]))"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", draw, str(family / "modular")],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        ).stdout
        for seed in ("1", "2")
    ]
    assert runs[0] == runs[1] and runs[0].startswith("<?xml")
    for name in load(family / "modular")[1].nodes:
        assert f">{name}</text>" in runs[0]


def test_doit_graph_reports_a_cycle(tmp_path):
    write_tree(
        tmp_path, {"a": stub("from generated.b.modeling_b import X"), "b": stub("from ..a.modeling_a import Y")}
    )
    result = run_graph("--dot", cwd=tmp_path)
    assert result.returncode != 0
    assert "import cycle:" in result.stderr and "Traceback" not in result.stderr
