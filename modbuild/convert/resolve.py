"""Pass 1: find which parent models, modules and symbols a modular file imports."""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst
from libcst.helpers import get_full_name_for_node

from modbuild.convert.source import (
    ConvertError,
    ModularWarning,
    SourceModule,
    Unit,
    common_suffix,
    load_source,
    read_with,
)
from modbuild.layout import Layout, kind_order
from modbuild.naming import Prefix, PrefixError, Renamer, infer_prefixes

__all__ = ["Layout", "Parent", "ParentImports", "find_parent_imports", "load_parents"]


@dataclass
class Parent:
    model: str
    prefix: Prefix
    renamer: Renamer
    modules: dict[str, SourceModule]  # kind -> parsed module of that kind
    index: dict[str, tuple[Unit, SourceModule]] = field(default_factory=dict)  # renamed name -> unit
    by_kind: dict[str, dict[str, tuple[Unit, SourceModule]]] = field(default_factory=dict)  # the same, per kind

    def renamed(self, original: str) -> str:
        """A parent's name as the child's code spells it: renamed, unless it is a hub kernel function."""
        if any(original in module.kernels for module in self.modules.values()):
            return original
        return self.renamer.identifier(original)

    def find(self, original: str) -> tuple[Unit, SourceModule] | None:
        """The parent's definition of a name; failing that, the import that brings it into a parent module."""
        imported = None
        for module in self.modules.values():
            for unit in module.units:
                if original in unit.names:
                    if not unit.is_import:
                        return unit, module
                    imported = imported or (unit, module)
        return imported


@dataclass
class ParentImports:
    """`local name -> (parent model, original symbol)` plus namespace imports `local -> parent model`."""

    symbols: dict[str, tuple[str, str]] = field(default_factory=dict)
    namespaces: dict[str, str] = field(default_factory=dict)
    statements: set[int] = field(default_factory=set)  # ids of import units to drop
    order: list[tuple[str, str, int]] = field(default_factory=list)  # (model, kind, line) in import order
    lines: dict[str, int] = field(default_factory=dict)  # local name -> line of its import


def _kind(layout: Layout, model: str, stem: str, path: Path, line: int) -> str:
    kind = layout.kind_of_stem(model, stem)
    if kind is None:  # model_target only returns imports naming a kind: this is a mixed `import a, b`
        raise ConvertError(path, line, f"'{stem}' of model '{model}' is not a module of model code")
    return kind


def find_parent_imports(child: SourceModule, layout: Layout) -> ParentImports:
    found = ParentImports()
    for unit in child.units:
        if not unit.is_import:
            continue
        stmt = unit.node.body[0]
        if not isinstance(stmt, cst.ImportFrom) or isinstance(stmt.names, cst.ImportStar):
            continue
        module = get_full_name_for_node(stmt.module) if stmt.module else None
        alias = stmt.names[0]
        original = get_full_name_for_node(alias.name)
        target = layout.model_target(module, len(stmt.relative), [original], child.path.parent.name)
        if target is None:
            continue
        (name,) = unit.names
        if target.stem is None:  # `from generated.llama import modeling_llama`
            found.namespaces[name] = target.model
            kind = _kind(layout, target.model, original, child.path, unit.line)
        else:
            found.symbols[name] = (target.model, original)
            kind = _kind(layout, target.model, target.stem, child.path, unit.line)
        found.order.append((target.model, kind, unit.line))
        found.lines[name] = unit.line
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
    try:
        camel, camels = infer_prefixes({p: _class_pairs(child, imports, p) for p in parents}, model)
    except PrefixError as exc:
        raise ConvertError(child.path, 1, str(exc)) from None
    return Prefix.from_model(model, camel), {p: Prefix.from_model(p, c) for p, c in camels.items()}


def load_parents(
    child: SourceModule, model: str, layout: Layout, read=None
) -> tuple[Prefix, list[Parent], ParentImports]:
    """Resolve and parse every parent module the child imports (each parsed once per process)."""
    imports = find_parent_imports(child, layout)
    prefix, parent_prefixes = child_prefix(child, imports, model)
    parents: dict[str, Parent] = {}
    exists = (lambda p: read_with(read, p) is not None) if read else Path.is_file
    for parent_model, kind, line in imports.order:
        path = layout.file(parent_model, kind)
        if not exists(path):
            raise ConvertError(
                child.path, line, f"parent module {path} does not exist (convert '{parent_model}' first)"
            )
        if parent_model not in parents:
            pp = parent_prefixes[parent_model]
            parents[parent_model] = Parent(parent_model, pp, Renamer(pp, prefix), {})
        _load_kind(parents[parent_model], kind, layout, exists, read)
    for parent in parents.values():
        parent.modules = dict(
            sorted(parent.modules.items(), key=lambda item: (item[0] != "modeling", kind_order(item[0])))
        )
        new = _parent_wide_prefix(_class_pairs(child, imports, parent.model), prefix, parent)
        if new != prefix:
            parent.renamer = Renamer(parent.prefix, new)
        _index_parent(parent)
        _check_symbols(child, imports, parent)
    return prefix, list(parents.values()), imports


def _load_kind(parent: Parent, kind: str, layout: Layout, exists, read) -> None:
    """Load one module of a parent, and the sibling modules it imports from (`from .configuration_llama`)."""
    if kind in parent.modules:
        return
    path = layout.file(parent.model, kind)
    module = parent.modules[kind] = load_source(path, read_with(read, path))
    for sibling in sibling_kinds(module, layout, parent.model):
        if exists(layout.file(parent.model, sibling)):
            _load_kind(parent, sibling, layout, exists, read)
    if kind == "modeling" and exists(layout.file(parent.model, "configuration")):
        # a model's config class is part of its meaning even where modeling names it only in strings
        _load_kind(parent, "configuration", layout, exists, read)


def sibling_kinds(module: SourceModule, layout: Layout, model: str) -> list[str]:
    """Kinds of the same model that a module imports from (`from .configuration_llama import X`)."""
    kinds = []
    for unit in module.units:
        stmt = unit.node.body[0] if isinstance(unit.node, cst.SimpleStatementLine) else None
        if isinstance(stmt, cst.ImportFrom) and len(stmt.relative) == 1 and stmt.module is not None:
            kind = layout.kind_of_stem(model, get_full_name_for_node(stmt.module))
            if kind is not None:
                kinds.append(kind)
    return kinds


def _index_parent(parent: Parent) -> None:
    for kind, module in parent.modules.items():
        own = parent.by_kind.setdefault(kind, {})
        for unit in module.units:
            if unit.is_import:
                continue
            for name in unit.names:
                key = name if name in module.unrenamed else parent.renamer.identifier(name)
                parent.index.setdefault(key, (unit, module))
                own.setdefault(key, (unit, module))


def _check_symbols(child: SourceModule, imports: ParentImports, parent: Parent) -> None:
    for local, (model, original) in imports.symbols.items():
        if model != parent.model or parent.find(original) is not None:
            continue
        line = imports.lines[local]
        spelled = {n for mod in parent.modules.values() for n in mod.definitions() if n.lower() == original.lower()}
        if len(spelled) != 1:
            raise ConvertError(child.path, line, f"'{original}' is not defined in model '{model}'")
        (actual,) = spelled  # HF's converter matches names regardless of case: `Paligemma...` for `PaliGemma...`
        warnings.warn_explicit(
            f"'{original}' is not defined in model '{model}'; using '{actual}', the one name that differs only in case",
            ModularWarning,
            str(child.path),
            line,
        )
        imports.symbols[local] = (model, actual)


def _parent_wide_prefix(pairs: list[tuple[str, str]], prefix: Prefix, parent: Parent) -> Prefix:
    """The prefix a parent's names take in the child: the one most of the child's classes flattening that parent's
    classes put in place of the parent's (`AriaText` for `AriaTextModel(LlamaModel)`,
    `AriaTextDecoderLayer(LlamaDecoderLayer)`: `LlamaRMSNorm` -> `AriaTextRMSNorm`), HF's rule. A tie keeps the
    model's prefix if it is among the most used, else takes the last met; a prefix whose parent spelling
    (`LlamaText`) names a class of the parent is not used (it would collide)."""
    votes: Counter[str] = Counter()
    for name, base in pairs:
        suffix = common_suffix(name, base)
        head = name.replace(suffix, "") if suffix and suffix[0].isupper() else prefix.camel
        if len(head) < len(prefix.camel) and prefix.camel in name:
            head = prefix.camel
        votes[head] += 1
    if not votes:
        return prefix
    top = votes.most_common(1)[0][1]
    tied = [name for name, count in votes.most_common() if count == top]
    final = prefix.camel if prefix.camel in tied else tied[-1]
    if final == prefix.camel or not final.startswith(prefix.camel):
        return prefix
    spelled = final.replace(prefix.camel, parent.prefix.camel, 1)
    if any(unit.is_class and unit.names[0].startswith(spelled) for m in parent.modules.values() for unit in m.units):
        return prefix
    rest = final[len(prefix.camel) :]
    return Prefix(prefix.lower + "".join(f"_{w.lower()}" for w in re.findall(r"[A-Z][^A-Z]*", rest)), final)
