"""Draw the model family graph as SVG with what pip installs, when graphviz's `dot` is not there.

A layered drawing: parents left, children right (networkx's `topological_generations` and
a column per generation), drawn by matplotlib with text kept as text, in a fixed order, ids salted and
no date, so the same graph gives the same bytes.
"""

from __future__ import annotations

import io
from pathlib import Path

import networkx as nx


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
    from modbuild.atomic import atomic_write

    atomic_write(target, draw_svg(graph))
