"""Drawing the family graph: the committed graph/models.svg depends on the graph only (not on the machine's
graphviz), and `doit graph -o FILE` writes the format FILE's suffix names, or refuses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic import FAMILY, doit, write_tree

from modbuild import graph_svg

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("render"), FAMILY)


@pytest.fixture
def other_dot(tmp_path) -> dict:
    """PATH with a `dot` that draws differently from the pinned graphviz-pure, as another graphviz version
    does (none is installed on the test machines, so a stand-in)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    fake.write_text(
        "#!/bin/sh\n"
        """case "$1" in -T\\?) echo 'Format: "?" not recognized. Use one of: png svg' >&2; exit 1;; esac\n"""
        "cat > /dev/null\necho '<svg><!-- another graphviz --></svg>'\n"
    )
    fake.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_the_committed_svg_is_the_pinned_drawing_of_the_committed_graph():
    exe = graph_svg.pinned_dot()
    assert exe, "graphviz-pure (pinned in pyproject.toml) is not installed"
    drawn = subprocess.run(
        [exe, "-Tsvg"], input=(ROOT / "graph" / "models.dot").read_bytes(), capture_output=True, check=False
    )
    assert drawn.returncode == 0 and drawn.stdout == (ROOT / "graph" / "models.svg").read_bytes()


def test_render_graph_gives_the_same_bytes_whatever_dot_is_installed(tree, other_dot):
    first = doit(tree, "render_graph")
    assert first.returncode == 0, first.stderr
    svg = (tree / "graph" / "models.svg").read_bytes()
    assert b"graphviz-pure" in svg
    (tree / ".doit.db.json").unlink()  # a fresh clone: the task runs again
    again = doit(tree, "render_graph", env=other_dot)
    assert again.returncode == 0, again.stderr
    assert (tree / "graph" / "models.svg").read_bytes() == svg


def test_without_the_pinned_dot_an_unchanged_graph_keeps_its_drawing(tree, tmp_path, other_dot, monkeypatch, capsys):
    from modbuild.graph import load, to_dot

    _, graph = load(tree / "modular")
    target = tmp_path / "models.svg"
    target.write_text("<svg>drawn by graphviz-pure</svg>")
    monkeypatch.setattr(graph_svg, "PINNED", "graphviz-pure-not-installed")
    monkeypatch.setenv("PATH", other_dot["PATH"])
    graph_svg.render_committed(to_dot(graph), target, graph, same_graph=True)
    assert target.read_text() == "<svg>drawn by graphviz-pure</svg>"
    assert f"{target}: kept (graphviz-pure-not-installed is not installed" in capsys.readouterr().err
    graph_svg.render_committed(to_dot(graph), target, graph, same_graph=False)  # a changed graph is redrawn
    assert "another graphviz" in target.read_text()


def run_graph(tree: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "doit", "graph", "--root", str(tree), "-o", str(out)],
        cwd=out.parent,
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )


def test_doit_graph_writes_the_format_the_suffix_names(tree, tmp_path):
    png = run_graph(tree, tmp_path / "g.png")
    assert png.returncode == 0, png.stderr
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    svg = run_graph(tree, tmp_path / "g.svg")
    assert svg.returncode == 0 and (tmp_path / "g.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize("name", ["g.docx", "graph"])
def test_doit_graph_refuses_a_format_it_cannot_write(tree, tmp_path, name):
    result = run_graph(tree, tmp_path / name)
    assert result.returncode != 0
    assert result.stderr.startswith(f"{tmp_path / name}: ") and "Traceback" not in result.stderr
    assert ".svg" in result.stderr and ".png" in result.stderr  # what it can write instead
    assert not (tmp_path / name).exists()
