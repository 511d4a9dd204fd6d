"""Pass 1: find which parent models, modules and symbols a modular file imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

from modbuild.convert.source import ConvertError, SourceModule, Unit, load_source
from modbuild.naming import Prefix, PrefixError, Renamer, infer_camel_prefixes

MODULE_KINDS = ("modeling", "configuration")


@dataclass(frozen=True)
class Layout:
    """Where modular inputs, parent modules and outputs live.

    This repository: `modular/<m>/modular_<m>.py` -> `generated/<m>/modeling_<m>.py`, parents imported as
    `generated.<p>.modeling_<p>`. An HF-style tree sets both roots to `models/`.
    """

    modular_root: Path
    generated_root: Path
    package: str = "generated"

    def parent_file(self, model: str, kind: str) -> Path:
        return self.generated_root / model / f"{kind}_{model}.py"

    def output_file(self, model: str, kind: str) -> Path:
        return self.generated_root / model / f"{kind}_{model}.py"


@dataclass
class Parent:
    model: str
    prefix: Prefix
    renamer: Renamer
    modules: dict[str, SourceModule]  # kind -> parsed generated file
    index: dict[str, tuple[Unit, SourceModule]] = field(default_factory=dict)  # renamed name -> unit

    def find(self, original: str) -> tuple[Unit, SourceModule] | None:
        for module in self.modules.values():
            for unit in module.units:
                if original in unit.names and not unit.is_import:
                    return unit, module
        return None


@dataclass
class ParentImports:
    """`local name -> (parent model, original symbol)` plus namespace imports `local -> parent model`."""

    symbols: dict[str, tuple[str, str]] = field(default_factory=dict)
    namespaces: dict[str, str] = field(default_factory=dict)
    statements: set[int] = field(default_factory=set)  # ids of import units to drop
    order: list[tuple[str, str, int]] = field(default_factory=list)  # (model, kind, line) in import order


def _module_target(node: cst.ImportFrom, package: str) -> tuple[str, str | None] | None:
    """(model, kind) for `from generated.llama.modeling_llama` / `from ..llama.modeling_llama`."""
    dotted = cst.Module([]).code_for_node(node.module).split(".") if node.module else []
    level = len(node.relative)
    pkg = package.split(".")
    if level == 0 and dotted[: len(pkg)] == pkg and len(dotted) > len(pkg):
        rest = dotted[len(pkg) :]
    elif level == 2 and dotted:
        rest = dotted
    else:
        return None
    return rest[0], (rest[1] if len(rest) > 1 else None)


def _kind_of(model: str, module: str, path: Path, line: int) -> str:
    for kind in MODULE_KINDS:
        if module == f"{kind}_{model}":
            return kind
    raise ConvertError(path, line, f"cannot import '{module}' of model '{model}': only modeling/configuration modules")


def find_parent_imports(child: SourceModule, layout: Layout) -> ParentImports:
    found = ParentImports()
    for unit in child.units:
        if not unit.is_import:
            continue
        stmt = unit.node.body[0]
        if not isinstance(stmt, cst.ImportFrom) or (target := _module_target(stmt, layout.package)) is None:
            continue
        model, module = target
        (name,) = unit.names
        alias = stmt.names[0]
        original = alias.name.value
        if module is None:  # `from generated.llama import modeling_llama`
            found.namespaces[name] = model
            found.order.append((model, _kind_of(model, original, child.path, unit.line), unit.line))
        else:
            found.symbols[name] = (model, original)
            found.order.append((model, _kind_of(model, module, child.path, unit.line), unit.line))
        found.statements.add(id(unit.node))
    return found


def _class_pairs(child: SourceModule, imports: ParentImports, model: str) -> list[tuple[str, str]]:
    pairs = []
    for unit in child.units:
        if not isinstance(unit.node, cst.ClassDef):
            continue
        for base in unit.node.bases:
            if isinstance(base.value, cst.Name) and imports.symbols.get(base.value.value, ("",))[0] == model:
                pairs.append((unit.node.name.value, imports.symbols[base.value.value][1]))
            elif isinstance(base.value, cst.Attribute) and isinstance(base.value.value, cst.Name):
                if imports.namespaces.get(base.value.value.value) == model:
                    pairs.append((unit.node.name.value, base.value.attr.value))
    return pairs


def child_prefix(child: SourceModule, imports: ParentImports, model: str) -> tuple[Prefix, dict[str, Prefix]]:
    """The child's prefix and each parent's, inferred from `class Qwen2MLP(LlamaMLP)` pairs."""
    parents = list(dict.fromkeys(m for m, _, _ in imports.order))
    camels, parent_prefixes = [], {}
    for parent in parents:
        try:
            inferred = infer_camel_prefixes(_class_pairs(child, imports, parent), model, parent)
        except PrefixError as exc:
            raise ConvertError(child.path, 1, f"{exc} (parent '{parent}')") from None
        if inferred:
            camels.append(inferred[0])
        parent_prefixes[parent] = Prefix.from_model(parent, inferred[1] if inferred else None)
    if len(set(camels)) > 1:
        raise ConvertError(child.path, 1, f"ambiguous prefix: class names use {sorted(set(camels))}")
    return Prefix.from_model(model, camels[0] if camels else None), parent_prefixes


def load_parents(
    child: SourceModule, model: str, layout: Layout, read=None
) -> tuple[Prefix, list[Parent], ParentImports]:
    """Resolve and parse every parent module the child imports (each parsed once per process)."""
    imports = find_parent_imports(child, layout)
    prefix, parent_prefixes = child_prefix(child, imports, model)
    parents: dict[str, Parent] = {}
    exists = (lambda p: read(p) is not None) if read else Path.is_file
    for parent_model, kind, line in imports.order:
        if parent_model in parents:
            continue
        if not exists(layout.parent_file(parent_model, kind)):
            path = layout.parent_file(parent_model, kind)
            raise ConvertError(
                child.path, line, f"parent module {path} does not exist (convert '{parent_model}' first)"
            )
        pp = parent_prefixes[parent_model]
        parent = parents[parent_model] = Parent(parent_model, pp, Renamer(pp, prefix), {})
        # Both files of a parent: its modeling file imports its config class from the sibling file.
        for other in MODULE_KINDS:
            path = layout.parent_file(parent_model, other)
            if exists(path):
                parent.modules[other] = load_source(path, read(path) if read else None)
    for parent in parents.values():
        _index_parent(parent)
        _check_symbols(child, imports, parent)
    return prefix, list(parents.values()), imports


def _index_parent(parent: Parent) -> None:
    for kind in MODULE_KINDS:
        module = parent.modules.get(kind)
        if module is None:
            continue
        for unit in module.units:
            if unit.is_import:
                continue
            for name in unit.names:
                key = name if name in module.import_names else parent.renamer.identifier(name)
                parent.index.setdefault(key, (unit, module))


def _check_symbols(child: SourceModule, imports: ParentImports, parent: Parent) -> None:
    for local, (model, original) in imports.symbols.items():
        if model == parent.model and parent.find(original) is None:
            line = next(u.line for u in child.units if u.is_import and local in u.names)
            raise ConvertError(child.path, line, f"'{original}' is not defined in model '{model}'")
