"""Draw the model family graph: laid out by graphviz's `dot`, or, where no `dot` exists, by matplotlib.

graph/models.svg is committed, so its bytes must depend on the graph only: it is drawn by the `graphviz-pure`
wheel pinned in pyproject.toml (a static build: the same bytes on every platform), never by whichever system
graphviz happens to be installed. Without that wheel an existing drawing of the same graph is kept.

`doit graph -o FILE` writes the format FILE's suffix names (`.svg`, `.png`, `.dot`, ...), with the first
`dot` that knows it; a suffix none knows is an error, never SVG bytes under another name.

The matplotlib drawing is layered: parents left, children right (networkx's `topological_generations` and a
column per generation), text kept as text, in a fixed order, ids salted and no date, so the same graph gives
the same bytes.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import networkx as nx

from modbuild.atomic import atomic_write

PINNED = "graphviz-pure"  # pinned in pyproject.toml: its version decides the bytes of graph/models.svg
TEXT_FORMATS = {".dot", ".gv"}  # the DOT text itself, no layout


class RenderError(ValueError):
    """The graph cannot be drawn as asked; the message starts with the target file."""


def pinned_dot() -> str | None:
    """The pinned `graphviz-pure`: first the one beside this interpreter (the venv's, even when it is not
    activated), else one on PATH."""
    return shutil.which(PINNED, path=sysconfig.get_path("scripts")) or shutil.which(PINNED)


def renderers() -> list[str]:
    """The layout programs, pinned first: graphviz-pure, then the system's graphviz `dot`."""
    return [exe for exe in dict.fromkeys((pinned_dot(), shutil.which("dot"))) if exe]


def output_formats(exe: str) -> set[str]:
    """What `exe -T<format>` accepts: `dot -T?` lists them on stderr ("... Use one of: canon dot gv ...")."""
    listed = subprocess.run([exe, "-T?"], capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r"Use one of:(.*)", listed.stderr + listed.stdout, flags=re.DOTALL)
    return set(found.group(1).split()) if found else set()


def layout(exe: str, dot_text: str, fmt: str, target: Path) -> bytes:
    done = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, timeout=300, check=False)
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
        raise RenderError(f"{target}: {Path(exe).name} -T{fmt} failed: {why}")
    return done.stdout


def render(dot_text: str, target: Path, graph: nx.DiGraph | None = None) -> None:
    """Write the graph to `target` in the format its suffix names; `RenderError` when no renderer here can."""
    target = Path(target)
    suffix = target.suffix.lower()
    if suffix in TEXT_FORMATS:
        atomic_write(target, dot_text)
        return
    if not suffix:
        raise RenderError(f"{target}: no suffix to name the format (.svg, .png, .dot, ...)")
    fmt, exes = suffix[1:], renderers()
    for exe in exes:
        if fmt in output_formats(exe):
            atomic_write(target, layout(exe, dot_text, fmt, target))
            return
    if exes:
        known = sorted({f".{f}" for exe in exes for f in output_formats(exe)} | TEXT_FORMATS)
        names = " and ".join(Path(exe).name for exe in exes)
        more = "" if shutil.which("dot") else "; a system graphviz (apt-get install graphviz) knows more, e.g. .pdf"
        raise RenderError(f"{target}: {names} cannot write {suffix} files (formats: {' '.join(known)}){more}")
    if suffix == ".svg" and graph is not None:
        write_svg(graph, target)
        return
    raise RenderError(
        f"{target}: no `dot` found to write {suffix} (pip install {PINNED}, or apt-get install graphviz); "
        "without one only .svg (drawn by matplotlib) and .dot"
    )


def render_committed(dot_text: str, target: Path, graph: nx.DiGraph, same_graph: bool) -> None:
    """graph/models.svg: drawn by the pinned graphviz-pure, so the same graph gives the same bytes on every
    machine. Without it, a drawing of the same graph (`same_graph`) is kept rather than redrawn differently."""
    if exe := pinned_dot():
        atomic_write(target, layout(exe, dot_text, "svg", target))
        return
    if same_graph and target.is_file():
        print(f"{target}: kept ({PINNED} is not installed; the graph has not changed)", file=sys.stderr)
        return
    print(f"{target}: {PINNED} is not installed: drawn by another renderer, other bytes", file=sys.stderr)
    render(dot_text, target, graph)


def draw_svg(graph: nx.DiGraph) -> str:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    layers = [sorted(layer) for layer in nx.topological_generations(graph)]
    # Column = generation, rows in name order, centred. (networkx's multipartite_layout orders a column
    # through a set, so its drawing changes with the hash seed.)
    pos = {
        node: (depth, (len(layer) - 1) / 2 - row)
        for depth, layer in enumerate(layers)
        for row, node in enumerate(layer)
    }
    width = max((len(layer) for layer in layers), default=1)
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "modbuild"}):
        fig, ax = plt.subplots(figsize=(2.5 + 2.4 * len(layers), 1.5 + 1.0 * width))
        box = {"boxstyle": "round,pad=0.5", "facecolor": "#eef2fb", "edgecolor": "#333355"}
        labels = {
            node: ax.text(*pos[node], node, ha="center", va="center", fontsize=10, family="sans-serif", bbox=box)
            for node in sorted(graph.nodes)
        }
        for parent, child in sorted(graph.edges):  # one fixed drawing order: the same graph, the same bytes
            # clipped to the two boxes, so arrows start and end at their edges whatever the label's width
            arrow = {"arrowstyle": "-|>", "color": "#555566", "shrinkA": 1, "shrinkB": 1, "mutation_scale": 14}
            arrow |= {"patchA": labels[parent].get_bbox_patch(), "patchB": labels[child].get_bbox_patch()}
            ax.annotate("", xy=pos[child], xytext=pos[parent], arrowprops=arrow)
        xs, ys = zip(*pos.values()) if pos else ((0,), (0,))
        ax.set_xlim(min(xs) - 0.3, max(xs) + 0.3)
        ax.set_ylim(min(ys) - 0.5, max(ys) + 0.5)
        ax.axis("off")
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
        plt.close(fig)
    return buffer.getvalue()


def write_svg(graph: nx.DiGraph, target: Path) -> None:
    atomic_write(target, draw_svg(graph))
