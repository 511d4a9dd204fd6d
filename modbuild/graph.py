"""The model family graph: which modular file imports which model's generated code.

Edges come from imports in `modular/<m>/modular_<m>.py` (and `configuration_<m>.py`):

    from generated.llama.modeling_llama import LlamaMLP     # absolute, the documented form
    from ..llama.modeling_llama import LlamaMLP             # relative, HF-style sibling package

Either makes `llama` a parent of `<m>`. Parsing uses the stdlib `ast`: edges are all we need here.
"""

from __future__ import annotations

import ast
import graphlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from modbuild.layout import Layout, SourceDecodeError, kind_of_class, read_source
from modbuild.toposort import ordered

if TYPE_CHECKING:
    import networkx as nx

MODULAR_FILE_KINDS = ("modular", "configuration")


class GraphError(Exception):
    pass


@dataclass
class Model:
    name: str
    sources: list[Path]
    parents: dict[str, tuple[Path, int]] = field(default_factory=dict)  # parent -> (file, line) of first import
    defines_config: bool = False  # its modular file defines a top-level *Config class
    error: str | None = None  # `path:line: message` when its imports could not be read
    directory: str | None = None  # where it lives, when that is not its own name


def model_sources(model_dir: Path, layout: Layout, name: str | None = None) -> list[Path]:
    name = name or model_dir.name
    kinds = MODULAR_FILE_KINDS if layout.style == "repo" else MODULAR_FILE_KINDS[:1]
    return [p for kind in kinds if (p := model_dir / f"{kind}_{name}.py").is_file()]


def other_models(model_dir: Path, layout: Layout) -> list[str]:
    """Models whose modular file sits in another model's directory (HF: data2vec/modular_data2vec_audio.py)."""
    if layout.style == "repo":
        return []
    return sorted(
        p.stem[len("modular_") :] for p in model_dir.glob("modular_*.py") if p.stem != f"modular_{model_dir.name}"
    )


def parent_of_import(node: ast.ImportFrom | ast.Import, layout: Layout, within: str = "") -> list[str]:
    """Model names that one import statement refers to (empty if it is not a model import)."""
    if isinstance(node, ast.Import):
        targets = [layout.target(".".join(a.name.split(".")[:-1]), 0) for a in node.names]
    else:
        targets = [layout.target(node.module, node.level, within)]
    return [t.model for t in targets if t is not None]


def _imports(body: list[ast.stmt]):
    """The import statements in `body` and the blocks nested in it, in source order.

    Imports are statements, so only statement lists are visited: `ast.walk` would also visit every
    expression node, which made it most of the graph's load time (and of a no-op `doit` run).
    """
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(getattr(node, "body", []))
        for block in [*getattr(node, "handlers", []), *getattr(node, "cases", [])]:  # except ...: / case ...:
            yield from _imports(block.body)
        yield from _imports(getattr(node, "orelse", []))
        yield from _imports(getattr(node, "finalbody", []))


def _scan(model: Model, known: set[str], layout: Layout) -> None:
    for path in model.sources:
        try:
            tree = ast.parse(read_source(path), filename=str(path))
        except SyntaxError as exc:
            model.error = f"{path}:{exc.lineno}: syntax error: {exc.msg}"
            return
        except SourceDecodeError as exc:  # this model's failure: discovery (`doit list`) goes on
            model.error = str(exc)
            return
        if path.name == f"modular_{model.name}.py":
            model.defines_config = any(
                isinstance(n, ast.ClassDef) and kind_of_class(n.name) == "configuration" for n in tree.body
            )
        for node in _imports(tree.body):
            for parent in parent_of_import(node, layout, model.directory or model.name):
                if parent == model.name:  # a model is not its own parent: not a silent self-edge either
                    model.error = model.error or (
                        f"{path}:{node.lineno}: model '{parent}' imports its own generated code: "
                        "a model cannot be its own parent"
                    )
                elif parent not in known and not (layout.generated_root / parent).is_dir():
                    model.error = model.error or f"{path}:{node.lineno}: imports unknown model '{parent}'"
                elif parent != model.name and parent in known:
                    model.parents.setdefault(parent, (path, node.lineno))


def _layout(where: Path | Layout) -> Layout:
    """A bare path is this repository's `modular/` directory."""
    return where if isinstance(where, Layout) else Layout(Path(where), Path(where).parent / "generated")


def discover(where: Path | Layout, strict: bool = True, only: set[str] | None = None) -> dict[str, Model]:
    """All models of a tree that have a modular file, with their parents resolved. Parents without a
    modular file (HF's hand-written llama, PaddleNLP's) are inputs, not models of the graph.

    `strict`: a model whose imports cannot be read (syntax error, unknown parent) raises GraphError;
    otherwise it is kept with its `error`, so the build can fail that model and go on with the others.
    `only`: read just these models and their ancestors (converting one file of a large tree).
    """
    layout = _layout(where)
    models = {}
    for model_dir in sorted(p for p in layout.modular_root.iterdir() if p.is_dir()):
        if sources := model_sources(model_dir, layout):
            models[model_dir.name] = Model(model_dir.name, sources)
        for name in other_models(model_dir, layout):
            models.setdefault(name, Model(name, model_sources(model_dir, layout, name), directory=model_dir.name))
    todo = sorted(models if only is None else set(only) & set(models))
    scanned: set[str] = set()
    while todo:
        model = models[todo.pop()]
        if model.name in scanned:
            continue
        scanned.add(model.name)
        _scan(model, set(models), layout)
        if strict and model.error:
            raise GraphError(model.error)
        todo += [p for p in model.parents if p not in scanned]
    return {name: model for name, model in models.items() if name in scanned}


def parents_first(models: dict[str, Model]) -> list[str]:
    """The build order: parents before children, ties by name. Raises GraphError naming a cycle."""
    try:
        return ordered({name: [p for p in model.parents if p in models] for name, model in models.items()}, str)
    except graphlib.CycleError as exc:
        names = exc.args[1]  # [a, b, ..., a]: each a parent of the next
        where = "; ".join(f"{models[b].parents[a][0]}:{models[b].parents[a][1]}" for a, b in zip(names, names[1:]))
        raise GraphError(f"import cycle: {' -> '.join(names)} ({where})") from None


def build_graph(models: dict[str, Model]) -> nx.DiGraph:
    """Edge parent -> child. Raises GraphError naming the cycle if there is one."""
    import networkx as nx  # the doit side only: the converter and the CLI order models with `parents_first`

    parents_first(models)
    graph = nx.DiGraph()
    graph.add_nodes_from(sorted(models))
    for name, model in models.items():
        graph.add_edges_from((parent, name) for parent in model.parents)
    return graph


def load(
    where: Path | Layout, strict: bool = True, only: set[str] | None = None
) -> tuple[dict[str, Model], nx.DiGraph]:
    models = discover(where, strict, only)
    return models, build_graph(models)


def layers(graph: nx.DiGraph) -> list[list[str]]:
    import networkx as nx

    return [sorted(layer) for layer in nx.topological_generations(graph)]


def to_dot(graph: nx.DiGraph) -> str:
    """DOT text; node names are quoted, so any model name is safe."""
    lines = ["digraph models {", "  rankdir=LR;", '  node [shape=box, style=rounded, fontname="Helvetica"];']
    lines += [f'  "{node}";' for node in sorted(graph.nodes)]
    lines += [f'  "{a}" -> "{b}";' for a, b in sorted(graph.edges)]
    lines.append("}")
    return "\n".join(lines) + "\n"
