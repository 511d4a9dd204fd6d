"""Pass 2: the child's namespace, and the transitive closure of what the emitted code uses.

The namespace is the modular file's meaning: every parent definition under its renamed name,
with the child's own definitions winning wherever a name is used. Only what the child's
definitions reach is emitted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

import libcst as cst
from libcst.helpers import get_full_name_for_node

from modbuild.convert import supercall
from modbuild.convert.dialect import init_call_stays
from modbuild.convert.merge import ClassMerger, ParentClass
from modbuild.convert.nodes import class_body, find_all, is_docstring, is_name
from modbuild.convert.rename import rename_node, rename_strings, replace_names
from modbuild.convert.resolve import Parent, ParentImports
from modbuild.convert.source import (
    ConvertError,
    InternalError,
    Member,
    SourceModule,
    Unit,
    common_suffix,
    member_key,
    split_import,
)
from modbuild.layout import kind_of_class
from modbuild.naming import Prefix, Renamer


class Placement(NamedTuple):
    """Where a definition goes in its output file before dependency order is applied (compared as a tuple):
    the parent module it comes from and its line there; a child-only definition follows the definition
    before it in the modular file (`sub` is its own line)."""

    group: int  # 2 * parent rank (+1 for a parent's non-modeling file); LOOSE for the child's bare statements
    line: int
    sub: int = 0

    LOOSE = 10**6  # statements that bind nothing go last
    IMPORTS = 10**7  # imports are emitted separately; their placement only keeps them out of the way

    @classmethod
    def after(cls, previous: tuple[int, int], line: int) -> "Placement":
        return cls(previous[0], previous[1], line)


@dataclass
class OutUnit:
    names: tuple[str, ...]
    node: cst.BaseStatement
    deps: frozenset[str]
    eager: frozenset[str]
    key: Placement
    is_import: bool = False
    uid: int = field(default=0)
    floating: bool = False  # a child-only definition: placed just before its first user
    origin: str | None = None  # the parent model whose code this is (None: the child's own)

    @property
    def is_class(self) -> bool:
        return isinstance(self.node, cst.ClassDef)

    @property
    def kind(self) -> str:
        """The output file kind of a class (`Qwen2Config` -> configuration); other units follow their users."""
        return kind_of_class(self.node.name.value) if self.is_class else "modeling"


class _NamespaceAttrs(cst.CSTTransformer):
    """`modeling_llama.LlamaMLP` -> `LlamaMLP` for namespace imports of parent modules."""

    def __init__(self, namespaces: set[str]):
        self.namespaces = namespaces

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.BaseExpression:
        if isinstance(original.value, cst.Name) and original.value.value in self.namespaces:
            return updated.attr
        return updated


def collect(child: SourceModule, prefix: Prefix, parents: list[Parent], imports: ParentImports) -> "Namespace":
    """Pass 2: the child's definitions over its renamed parents, in the order each step needs the last."""
    ns = Namespace(child, prefix, parents, imports)
    ns.aliases, ns.class_aliases = ns._aliases()
    ns.kept = {alias: ns._kept_parent_class(alias) for alias in ns._explicit_parent_calls()}
    # an imported name the child redefines (`class DetrDecoderOutput(DetrDecoderOutput)`, HF 5.x maskformer) is
    # the child's class after its definition, as in Python: not mapped to the renamed parent name
    redefined = {
        n for unit in child.units if isinstance(unit.node, (cst.ClassDef, cst.FunctionDef)) for n in unit.names
    }
    ns.local_map = {
        local: ns.by_model[model].renamed(original)
        for local, (model, original) in imports.symbols.items()
        if local not in ns.kept and local not in redefined
    }
    ns.child_units, ns.child_roots = ns._child_units()
    ns.child_defs = {n: u for u in ns.child_units if not u.is_import for n in u.names}
    ns.child_imports = {n: u for u in ns.child_units if u.is_import for n in u.names}
    ns.explicit = ns._explicit_imports()
    ns.settle_collisions()
    return ns


class Namespace:
    """The child's namespace: what each name means (`resolve`) and what the emitted code needs (`closure`).
    Built by `collect`."""

    def __init__(self, child: SourceModule, prefix: Prefix, parents: list[Parent], imports: ParentImports):
        self.child, self.prefix, self.parents, self.imports = child, prefix, parents, imports
        self.by_model = {p.model: p for p in parents}
        self.merger = ClassMerger(child.path, child.line_of, init_call_stays(child.path))
        self._counter = 0
        self._parent_cache: dict[int, OutUnit] = {}
        self.aliases: dict[str, str] = {}  # renamed parent class -> the child class standing for it
        self.class_aliases: dict[str, dict[str, str]] = {}  # the same, for one child class's own body
        self.prefer: dict[str, Parent] = {}  # a name several parents define -> the one whose code uses it
        self.kept: dict[str, OutUnit] = {}  # escape hatch: parent classes kept under their own names
        self.local_map: dict[str, str] = {}  # the child's import alias -> the renamed name
        self.child_units: list[OutUnit] = []
        self.child_roots: list[OutUnit] = []
        self.child_defs: dict[str, OutUnit] = {}
        self.child_imports: dict[str, OutUnit] = {}
        self.explicit: dict[str, tuple[Parent, Unit, SourceModule]] = {}
        self.siblings: dict[str, OutUnit] = {}  # names the child imports from its model's own modules

    def settle_collisions(self) -> None:
        """A name that several parents define is taken from the parent whose code refers to it, when only one
        parent's code does and the child's own code does not (HF: phi's `PhiPreTrainedModel` comes from llama,
        whose `LlamaModel` it flattens, not from clip, imported first). Otherwise the first-imported parent's."""
        refs: dict[str, set[str | None]] = {}
        self.closure(self.child_roots, refs=refs)
        for name, origins in refs.items():
            defining = [p for p in self.parents if name in p.index]
            if len(defining) < 2 or None in origins or len(origins) != 1:
                continue
            (origin,) = origins
            chosen = next((p for p in defining if p.model == origin), None)
            if chosen is not None and chosen is not defining[0]:
                self.prefer[name] = chosen

    def _flattened_pairs(self) -> list[tuple[str, Parent, str]]:
        """(child class, parent, parent class) for every child class whose first base is a parent's class."""
        pairs = []
        for unit in self.child.units:
            if isinstance(unit.node, cst.ClassDef):
                hit = next((h for arg in unit.node.bases if (h := self._parent_base(arg))), None)
                if hit is not None:
                    pairs.append((unit.node.name.value, *hit))
        return pairs

    def _aliases(self) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        """A child class that flattens a parent class under another name (`AriaTextDecoderLayer(LlamaDecoderLayer)`)
        stands for it everywhere (`AriaDecoderLayer` -> `AriaTextDecoderLayer`), unless the child defines that
        name itself. When several child classes flatten the same parent class (`AriaPreTrainedModel`,
        `AriaTextPreTrainedModel`), a class whose name shares one's prefix (`AriaTextModel`) uses that one (HF)."""
        defined = {n for unit in self.child.units if not unit.is_import for n in unit.names}
        pairs = self._flattened_pairs()
        by_base: dict[tuple[str, str], list[str]] = {}
        for name, parent, original in pairs:
            by_base.setdefault((parent.model, original), []).append(name)
        heads = {name: _class_head(name, parent, original) for name, parent, original in pairs}
        aliases: dict[str, str] = {}
        per_class: dict[str, dict[str, str]] = {}
        for (model, original), names in by_base.items():
            renamed = self.by_model[model].renamer.identifier(original)
            if len(names) == 1 and names[0] != renamed and renamed not in defined:
                aliases[renamed] = names[0]
                continue
            tail = renamed[len(self.prefix.camel) :] if renamed.startswith(self.prefix.camel) else ""
            for name, head in heads.items():
                if tail and head and head != self.prefix.camel and f"{head}{tail}" in names:
                    per_class.setdefault(name, {})[renamed] = f"{head}{tail}"
        return aliases, per_class

    def _explicit_parent_calls(self) -> list[str]:
        """Parent classes called explicitly by a child class that subclasses them, `LlamaAttention.forward(self, x)`:
        the escape hatch. Such a child keeps the parent class (under its own name) as a real base."""
        found = []
        for unit in self.child.units:
            if not isinstance(unit.node, cst.ClassDef):
                continue
            bases = {
                a.value.value for a in unit.node.bases if is_name(a.value) and a.value.value in self.imports.symbols
            }
            code = (unit.text or cst.Module([]).code_for_node(unit.node)) if bases else ""
            if any(f"{base}." in code for base in bases):  # matchers are slow: look only where it can be
                found += [
                    c.func.value.value for c in find_all(unit.node, _explicit_call) if c.func.value.value in bases
                ]
        return sorted(set(found))

    def _kept_parent_class(self, alias: str) -> OutUnit:
        model, original = self.imports.symbols[alias]
        parent = self.by_model[model]
        unit, module = parent.find(original)
        node = rename_node(unit.node, parent.renamer, module.unrenamed | {original}, unit.text, unit.members)
        if alias != original:
            node = node.with_changes(name=cst.Name(alias))
        deps = self._parent_deps(parent, module, unit.deps - {original})
        eager = self._parent_deps(parent, module, unit.eager)
        return self._new((alias,), node, deps, self._parent_key(parent, (unit, module)), eager=eager)

    def _new(self, names, node, deps, key, is_import=False, eager=()) -> OutUnit:
        """`eager`: the names read while the module executes (from the compiler's scope analysis)."""
        self._counter += 1
        deps = frozenset(deps) - set(names)
        return OutUnit(tuple(names), node, deps, frozenset(eager) & deps, key, is_import, self._counter)

    # -- the child's own definitions -------------------------------------------------------------
    def _out(self, names) -> frozenset[str]:
        return frozenset(self.local_map.get(n, n) for n in names if n not in self.imports.namespaces)

    def _child_units(self) -> tuple[list[OutUnit], list[OutUnit]]:
        units, roots = [], []
        last = (-1, 0)  # the group and line of the last parent definition the child's followed
        for unit in self.child.units:
            if unit.is_import and not unit.names:
                self.siblings |= {name: out for out in self._sibling_imports(unit) for name in out.names}
                continue
            if id(unit.node) in self.imports.statements or unit.names in ((), ("__all__",)):
                continue
            if unit.is_import:
                units.append(self._new(unit.names, unit.node, (), Placement(Placement.IMPORTS, unit.line), True))
                continue
            try:
                out, last = self._child_unit(unit, last)
            except ConvertError:
                raise
            except Exception as exc:  # a converter bug: name the definition it met it in
                raise InternalError(self.child.path, unit.line, exc) from exc
            units.append(out)
            roots.append(out)
        for stmt, deps, line in self.child.loose:
            if not is_docstring(stmt):
                roots.append(self._new((), self._localise(stmt), self._out(deps), Placement(Placement.LOOSE, line)))
        return units, roots

    def _hand_written(self, unit: OutUnit) -> bool:
        """Whether the model's own module a sibling import names is written by hand: not one that a converter
        generated from this modular file (HF's glm4 imports Glm4RMSNorm from the modeling_glm4.py it generates;
        that name means the renamed parent's)."""
        stmt = unit.node.body[0]
        stem = get_full_name_for_node(stmt.module) if stmt.module else None
        path = self.child.path.parent / f"{stem}.py"
        if stem is None or not path.is_file():
            return False
        with path.open(encoding="utf-8", errors="replace") as handle:
            head = "".join(line for _, line in zip(range(15), handle))
        generated = "automatically generated from" in head or "Generated by modbuild from" in head
        return not (generated and self.child.path.name in head)

    def _sibling_imports(self, unit: Unit) -> list[OutUnit]:
        """`from .configuration_csm import CsmDepthDecoderConfig`: the model's own module, written by hand beside
        the modular file (HF). A name that neither the child nor a parent defines comes from there: the import
        is kept where the output uses it."""
        stmt = unit.node.body[0] if isinstance(unit.node, cst.SimpleStatementLine) else None
        if not isinstance(stmt, cst.ImportFrom):
            return []
        return [
            self._new((name,), unit.node.with_changes(body=[one]), (), Placement(Placement.IMPORTS, unit.line), True)
            for name, one in split_import(stmt)
        ]

    def _child_unit(self, unit: Unit, last: tuple[int, int]) -> tuple[OutUnit, tuple[int, int]]:
        """One child definition: a class merged over its parent's, or anything else as written (localised)."""
        merged = self._merge(unit) if isinstance(unit.node, cst.ClassDef) else None
        if merged is not None:
            return merged
        node = self._localise(unit.node)
        replaced = self._replaced_key(unit.names)
        key = replaced or Placement.after(last, unit.line)
        out = self._new(unit.names, node, self._out(unit.deps), key, eager=self._out(unit.eager))
        out.floating = replaced is None and bool(self.parents)
        return out, last

    def _explicit_imports(self) -> dict[str, tuple[Parent, Unit, SourceModule]]:
        """`from ..llama.modeling_llama import apply_rotary_pos_emb`: that parent's definition, whichever
        parent comes first. With several parents, the explicit import says which one the model uses."""
        found = {}
        for local, (model, original) in self.imports.symbols.items():
            parent = self.by_model[model]
            located = parent.find(original)
            if local in self.local_map and located is not None:
                found.setdefault(self.local_map[local], (parent, *located))
        return found

    def _replaced_key(self, names: tuple[str, ...]) -> Placement | None:
        """A child definition that replaces a parent's (`def rotate_half`) takes the parent's place."""
        for parent in self.parents:
            for name in names:
                if name in parent.index:
                    return self._parent_key(parent, parent.index[name])
        return None

    def _localise(self, node: cst.CSTNode) -> cst.CSTNode:
        if self.imports.namespaces:
            node = node.visit(_NamespaceAttrs(set(self.imports.namespaces)))
        return replace_names(node, self.local_map)

    def _parent_base(self, base: cst.Arg) -> tuple[Parent, str] | None:
        value = base.value
        if isinstance(value, cst.Name) and value.value in self.imports.symbols:
            model, original = self.imports.symbols[value.value]
            return self.by_model[model], original
        if isinstance(value, cst.Attribute) and isinstance(value.value, cst.Name):
            model = self.imports.namespaces.get(value.value.value)
            if model is not None:
                return self.by_model[model], value.attr.value
        return None

    def _merge(self, unit: Unit) -> tuple[OutUnit, tuple] | None:
        node = unit.node
        # Only the first parent-model base is flattened; further ones (mixins) stay bases, renamed.
        found = [(arg, hit) for arg in node.bases if (hit := self._parent_base(arg))][:1]
        if not found or is_name(found[0][0].value) and found[0][0].value.value in self.kept:
            return None
        parents = []
        for arg, (parent, original) in found:
            located = parent.find(original)
            if located is None or not isinstance(located[0].node, cst.ClassDef):
                raise ConvertError(
                    self.child.path, unit.line, f"'{original}' is not a class of model '{parent.model}'"
                )
            aliases = {**self.aliases, **self.class_aliases.get(node.name.value, {})}
            renamed = self._renamed_class(parent, *located, aliases)
            parents.append(_own_name_in_strings(renamed, node.name.value, parent.renamed(original)))
        members = [Member(mem.key, mem.node, self._out(mem.deps), mem.text) for mem in unit.members]
        own = {cst.Module([]).code_for_node(arg.value) for arg, _ in found}
        merged = self.merger.merge(node, members, parents, own)
        # Only the child's statements name imported parent symbols: the parent's are renamed already.
        inherited = {id(mem.node) for parent in parents for mem in parent.members}
        # The child's statements name imported parent symbols only if its class reads one beyond its bases.
        base_names = {arg.value.value for arg in node.bases if is_name(arg.value)}
        if self.imports.namespaces or (unit.deps - base_names) & self.local_map.keys():
            body = [stmt if id(stmt) in inherited else self._localise(stmt) for stmt in merged.node.body.body]
        else:
            body = list(merged.node.body.body)
        out_node = merged.node.with_changes(
            bases=[self._localise(arg) for arg in merged.node.bases],
            decorators=[self._localise(dec) for dec in merged.node.decorators],
            body=merged.node.body.with_changes(body=body),
        )
        header = [
            *merged.node.decorators,
            *node.keywords,
            *(a for a in node.bases if all(a is not f for f, _ in found)),
        ]
        deps = self._out(merged.deps) | self._out(supercall.names_in(header).read & unit.deps)
        key = self._parent_key(found[0][1][0], parents[0].origin)
        parent_unit, parent_module = parents[0].origin
        eager = self._out(unit.eager) | self._parent_deps(found[0][1][0], parent_module, parent_unit.eager, aliases)
        merged_unit = self._new(unit.names, out_node, deps, key, eager=eager)
        merged_unit.origin = found[0][1][0].model  # its inherited code is the parent's
        return merged_unit, key[:2]

    def _renamed_class(
        self, parent: Parent, unit: Unit, module: SourceModule, aliases: dict[str, str] | None = None
    ) -> ParentClass:
        aliases = self.aliases if aliases is None else aliases
        node = replace_names(
            rename_node(unit.node, parent.renamer, module.unrenamed, unit.text, unit.members), aliases
        )
        members = [
            Member(member_key(new), new, self._parent_deps(parent, module, mem.deps, aliases))
            for mem, new in zip(unit.members, class_body(node))
        ]
        return ParentClass(node, members, (unit, module))

    # -- parent definitions pulled in by use -----------------------------------------------------
    def _parent_deps(
        self, parent: Parent, module: SourceModule, deps, aliases: dict[str, str] | None = None
    ) -> frozenset[str]:
        aliases = self.aliases if aliases is None else aliases
        renamed = (d if d in module.unrenamed else parent.renamer.identifier(d) for d in deps)
        return frozenset(aliases.get(d, d) for d in renamed)

    def _parent_key(self, parent: Parent, located: tuple[Unit, SourceModule]) -> Placement:
        unit, module = located
        rank = self.parents.index(parent) * 2 + (module is not parent.modules.get("modeling"))
        return Placement(rank, unit.line)

    def _parent_unit(self, parent: Parent, unit: Unit, module: SourceModule) -> OutUnit:
        cached = self._parent_cache.get(id(unit.node))
        if cached is None:
            if unit.is_import:
                cached = self._new(
                    unit.names, relocate_import(unit.node, parent.model), (), Placement(Placement.IMPORTS, 0), True
                )
            else:
                node = rename_node(unit.node, parent.renamer, module.unrenamed, unit.text, unit.members)
                if set(unit.names) & module.kernels:  # its hub registration (`("mamba_inner_fn", "mamba_ssm")`) too
                    node = node.with_changes(decorators=unit.node.decorators)
                node = replace_names(node, self.aliases)
                names = [n if n in module.unrenamed else parent.renamer.identifier(n) for n in unit.names]
                deps, eager = (self._parent_deps(parent, module, d) for d in (unit.deps, unit.eager))
                cached = self._new(names, node, deps, self._parent_key(parent, (unit, module)), eager=eager)
            cached.origin = parent.model
            self._parent_cache[id(unit.node)] = cached
        return cached

    def resolve(self, name: str, kind: str | None = None, origin: str | None = None) -> OutUnit | None:
        """The unit that defines `name` in the child's namespace: child first, then parents in import order."""
        if name in self.child_defs:
            return self.child_defs[name]
        if name in self.kept:
            return self.kept[name]
        if name in self.child_imports:
            return self.child_imports[name]
        if name in self.siblings and self._hand_written(self.siblings[name]):  # the child names its own module
            return self.siblings[name]  # explicitly (HF: kept as an import)
        if name in self.explicit:
            return self._parent_unit(*self.explicit[name])
        if name in self.aliases:
            return self.child_defs[self.aliases[name]]
        if name in self.prefer:
            return self._parent_unit(self.prefer[name], *self.prefer[name].index[name])
        if origin is not None and origin in self.by_model and name in self.by_model[origin].index:
            return self._parent_unit(self.by_model[origin], *self.by_model[origin].index[name])
        for parent in self.parents:  # a file of one kind takes a parent's definition from its file of that kind
            if (located := parent.by_kind.get(kind, {}).get(name)) is not None:
                return self._parent_unit(parent, *located)
        for parent in self.parents:
            if name in parent.index:
                return self._parent_unit(parent, *parent.index[name])
        for parent in self.parents:
            for module in parent.modules.values():
                for unit in module.units:
                    if unit.is_import and name in unit.names:
                        return self._parent_unit(parent, unit, module)
        return self.siblings.get(name)

    def closure(
        self,
        roots: list[OutUnit],
        stop: set[int] = frozenset(),
        kind: str | None = None,
        refs: dict[str, set[str | None]] | None = None,
    ) -> tuple[list[OutUnit], dict[str, int]]:
        """Units reachable from `roots`; names resolving to units in `stop` are returned (name -> uid), not followed.
        `refs` collects, per name, the origins of the code that refers to it."""
        seen: dict[int, OutUnit] = {}
        crossing: dict[str, int] = {}
        todo = list(roots)
        while todo:
            unit = todo.pop()
            if unit.uid in seen:
                continue
            seen[unit.uid] = unit
            for name in sorted(unit.deps):
                if refs is not None:  # settling: each parent's code sees its own definitions first
                    refs.setdefault(name, set()).add(unit.origin)
                target = self.resolve(name, kind, unit.origin if refs is not None else None)
                if target is None:
                    continue
                if target.uid in stop:
                    crossing[name] = target.uid
                elif target.uid not in seen:
                    todo.append(target)
        return list(seen.values()), crossing


def _own_name_in_strings(parent: ParentClass, name: str, renamed: str) -> ParentClass:
    """A class flattening a parent class under another name (`AriaPreTrainedModel(LlamaPreTrainedModel)`, whose
    parent renames to `AriaTextPreTrainedModel`) has its own name's head in the inherited strings, docstrings and
    comments: `"AriaTextDecoderLayer"` reads `"AriaDecoderLayer"` there (HF's rule)."""
    if name == renamed:
        return parent
    suffix = common_suffix(name, renamed)
    old, new = renamed.replace(suffix, "") if suffix else renamed, name.replace(suffix, "") if suffix else name
    if not old or not new:
        return parent
    renamer = Renamer(Prefix(_snake(old), old), Prefix(_snake(new), new))
    node = rename_strings(parent.node, renamer)
    members = [Member(m.key, new_node, m.deps, m.text) for m, new_node in zip(parent.members, class_body(node))]
    return ParentClass(node, members, parent.origin)


def _snake(camel: str) -> str:
    """HF's `get_lowercase_name`: `AriaText` -> `aria_text`."""
    return "_".join(part.lower() for part in re.findall(r"[A-Z][^A-Z]*", camel)) or camel.lower()


def _class_head(name: str, parent: Parent, original: str) -> str | None:
    """`AriaText` for `AriaTextModel(LlamaModel)`: what the child class's name has in place of the parent's prefix."""
    old = parent.prefix.camel
    if original.startswith(old) and name.endswith(original[len(old) :]):
        return name[: len(name) - len(original) + len(old)] or None
    return None


def relocate_import(node: cst.SimpleStatementLine, model: str) -> cst.SimpleStatementLine:
    """A parent's `from . import fusion_ops` / `from .fusion_ops import x`, as seen from the child's directory
    (a sibling of the parent's): `from ..llama import fusion_ops`. Deeper relative imports mean the same there."""
    stmt = node.body[0]
    if not (isinstance(stmt, cst.ImportFrom) and len(stmt.relative) == 1):
        return node
    dotted = model if stmt.module is None else f"{model}.{get_full_name_for_node(stmt.module)}"
    module = cst.parse_expression(dotted)
    return node.with_changes(body=[stmt.with_changes(relative=[cst.Dot(), cst.Dot()], module=module)])


def _explicit_call(node: cst.CSTNode) -> bool:
    """`LlamaAttention.forward(self, ...)`: a class's method called with `self`."""
    return (
        isinstance(node, cst.Call)
        and isinstance(node.func, cst.Attribute)
        and is_name(node.func.value)
        and bool(node.args)
        and is_name(node.args[0].value, "self")
    )
