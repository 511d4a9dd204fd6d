"""`doit graph`: the model family graph, as DOT on stdout (`--dot`) or rendered (`-o FILE.svg`, `.png`, `.dot`...).

A doit command plugin (entry point group `doit.COMMAND`), so it needs no dodo.py task named `graph`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from doit.cmd_base import Command

from modbuild.graph import GraphError, layers, load, to_dot


class GraphCommand(Command):
    name = "graph"
    doc_purpose = "show the model family graph (parents before children)"
    doc_usage = "[--dot] [-o FILE] [--root DIR]"
    cmd_options = (
        {"name": "dot", "long": "dot", "type": bool, "default": False, "help": "print the graph as DOT"},
        {
            "name": "output",
            "short": "o",
            "long": "output",
            "type": str,
            "default": "",
            "help": "write the graph to FILE in the format its suffix names: .dot/.gv as text; .svg, .png, .jpg, "
            ".json... laid out by graphviz-pure (a system graphviz `dot` adds its formats, e.g. .pdf)",
        },
        {"name": "root", "long": "root", "type": str, "default": ".", "help": "project root holding modular/"},
    )

    def execute(self, params, args) -> int:
        try:
            _, graph = load(Path(params["root"]) / "modular")
        except GraphError as exc:
            print(exc, file=sys.stderr)
            return 1
        dot_text = to_dot(graph)
        if params["output"]:
            from modbuild.graph_svg import RenderError, render

            try:
                render(dot_text, Path(params["output"]), graph)
            except RenderError as exc:
                print(exc, file=sys.stderr)
                return 1
        if params["dot"]:
            sys.stdout.write(dot_text)
        elif not params["output"]:
            for depth, names in enumerate(layers(graph)):
                print(f"{depth}: {' '.join(names)}")
        return 0
