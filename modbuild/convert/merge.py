"""Pass 3: merge a child class over its (already renamed) parent class.

Child members replace the parent's members with the same key at the parent's position; new
members follow. `attr = AttributeError()` and methods HF reads as removal markers (`is_removal`) remove
a member. Statement-level `super().f(...)` calls are unrolled (see `supercall`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import libcst as cst

from modbuild.convert import supercall
from modbuild.convert.hoist import hoist
from modbuild.convert.nodes import find_all, is_docstring, is_name, is_super_call, single, strip_docstring
from modbuild.convert.source import ConvertError, Member, ModularWarning, common_suffix


def _attribute_error(node: cst.CSTNode | None) -> bool:
    """`AttributeError` or `AttributeError(...)`: the dialect's removal marker."""
    return is_name(node.func if isinstance(node, cst.Call) else node, "AttributeError")


@dataclass
class ParentClass:
    node: cst.ClassDef  # renamed
    members: list[Member]  # renamed, deps in output names
    origin: tuple = ()  # (unit, module) it was renamed from


@dataclass
class Merged:
    node: cst.ClassDef
    deps: set[str]


# HF's removal marker for a method, matched on the method's source as written (leading blank line included):
# `def f(...):` on one line after one blank line, then `raise SomethingError(...)` as its first line.
_REMOVAL = re.compile(r"\ndef .*\(.*\).*:.*\n    raise.*Error\(.*")


def is_removal(node: cst.BaseStatement) -> bool:
    """`attr = AttributeError()`, or a method HF takes for a removal marker: its body starts by raising an error
    (`raise NotImplementedError("No need to inherit")` too) and its `def` line is on its own after one blank line.
    A docstring before the `raise`, a decorator, or the class's first line right above it make it a member as
    written (HF's rule, from its converter's pattern; 5.x moonshine, deepseek_vl, jamba)."""
    if isinstance(inner := single(node), cst.Assign) and _attribute_error(inner.value):
        return True
    return isinstance(node, cst.FunctionDef) and _REMOVAL.match(cst.Module([]).code_for_node(node)) is not None


def _docstring(fn: cst.FunctionDef) -> cst.BaseStatement | None:
    body = fn.body.body
    if body and is_docstring(body[0]):
        return body[0]
    return None


class ClassMerger:
    def __init__(self, path, line_of: Callable[[cst.CSTNode], int], init_call_stays: bool = False):
        self.path, self.line_of = path, line_of
        self.init_call_stays = init_call_stays  # HF >= 4.56: see `_starts_with_init_call`
        self.deleted: list[tuple[str, cst.BaseStatement]] = []

    def error(self, node: cst.CSTNode) -> Callable[[str], ConvertError]:
        return lambda message: ConvertError(self.path, self.line_of(node), message)

    def warn(self, node: cst.CSTNode) -> Callable[[str], None]:
        """Where HF's meaning (which we follow) differs from plain Python's: say so, naming `path:line`."""
        return lambda message: warnings.warn_explicit(message, ModularWarning, str(self.path), self.line_of(node))

    def merge(
        self, child: cst.ClassDef, child_members: list[Member], parents: list[ParentClass], own: set[str]
    ) -> Merged:
        """Merge `child` over `parents` (first base wins); `own` are the child's names for its merged bases."""
        self.deleted = []
        members = list(parents[-1].members)
        for parent in reversed(parents[:-1]):
            members = self._overlay(members, parent.members, {})
        inherited = {mem.key: mem for mem in members if mem.key}
        merged_members = self._overlay(members, child_members, inherited)
        # `Base.f(self, ...)` may name the flattened parent's bases too (`nn.Module.__init__(self)`), as in HF
        inherited_bases = {_code(arg.value) for parent in parents for arg in parent.node.bases}
        own_bases = {_code(arg.value) for arg in child.bases}
        calls = _BaseCalls(own_bases, inherited_bases | _standing_for(own_bases | inherited_bases))
        merged_members = [
            Member(mem.key, mem.node.visit(calls), mem.deps) if _may_call_bases(mem, calls.bases | calls.kept) else mem
            for mem in merged_members
        ]
        self._check_deleted_attrs(merged_members)
        body = [mem.node for mem in merged_members if not _is_placeholder(mem.node)] or [
            cst.SimpleStatementLine([cst.Pass()])
        ]
        deps = set().union(*(mem.deps for mem in merged_members)) if merged_members else set()
        # `class A(B): ...` on one line has a suite of small statements: the merged body needs a block
        block = child.body if isinstance(child.body, cst.IndentedBlock) else cst.IndentedBlock(body=[])
        node = child.with_changes(
            bases=self._bases(child, parents, own, calls.used - own),
            keywords=child.keywords or parents[0].node.keywords,
            decorators=_own_decorators(child)
            if _no_inherit(child)
            else child.decorators or parents[0].node.decorators,
            body=block.with_changes(body=body),
        )
        for parent in parents:
            deps |= _header_deps(parent)
        return Merged(node, deps)

    def _bases(self, child: cst.ClassDef, parents: list[ParentClass], own: set[str], drop: set[str]) -> list[cst.Arg]:
        """The parent's bases in place of the flattened one; an extra base the class only calls through
        `Base.f(...)` (HF's way to skip the parent's method) is dropped."""
        bases: list[cst.Arg] = []
        merged = iter(parents)
        flattened = [
            isinstance(arg.value, cst.Name)
            and arg.value.value in own
            or isinstance(arg.value, cst.Attribute)
            and _code(arg.value) in own
            for arg in child.bases
        ]
        extras = [a for a, f in zip(child.bases, flattened) if not f and _code(a.value) not in drop]
        for arg, is_flattened in zip(child.bases, flattened):
            if _code(arg.value) in drop:
                continue
            if is_flattened:
                bases += [_switched(base, extras) for base in next(merged).node.bases]
            else:
                bases.append(arg)
        seen, out = set(), []
        for arg in _without_plain_module(bases, extras):
            if (key := _code(arg.value)) not in seen:
                seen.add(key)
                out.append(arg.with_changes(comma=cst.MaybeSentinel.DEFAULT))
        return out

    def _overlay(self, parent: list[Member], child: list[Member], inherited: dict[str, Member]) -> list[Member]:
        by_key = {mem.key: mem for mem in child if mem.key}
        used: set[str] = set()
        out = []
        # As in Python, a child property replaces the parent's property whole: its setter goes too.
        dropped = {
            f"{key}.{part}" for key, mem in by_key.items() if _is_property(mem.node) for part in ("setter", "deleter")
        }
        for mem in parent:
            if mem.key in dropped and mem.key not in by_key:
                continue
            override = by_key.get(mem.key) if mem.key else None
            if override is None:
                out.append(mem)
                continue
            used.add(mem.key)
            if not is_removal(override.node):
                out.append(self._member(override, mem, inherited))
        for mem in child:
            # a removal marker removes what the parent has; a new member shaped like one is kept, as written (HF)
            if mem.key in used or _is_placeholder(mem.node):
                continue
            new = self._member(mem, None, inherited)
            if mem.key == "__doc__":
                out.insert(0, new)  # a docstring the parent lacked still comes first
            elif _is_attribute(mem.node):  # with the parent's class attributes, before its methods (HF)
                last = max((i for i, m in enumerate(out) if _is_attribute(m.node)), default=-1)
                out.insert(last + 1 if last >= 0 else (1 if out and out[0].key == "__doc__" else 0), new)
            else:
                out.append(new)
        return out

    def _member(self, child: Member, parent: Member | None, inherited: dict[str, Member]) -> Member:
        if not isinstance(child.node, cst.FunctionDef) or not inherited:
            return child
        node, deps = self._unroll(
            child.node, inherited, set(child.deps) - ({NO_INHERIT} if _no_inherit(child.node) else set())
        )
        if parent is not None and isinstance(parent.node, cst.FunctionDef):
            inheriting = node
            node = _inherit_function_parts(node, parent.node)
            if node is not inheriting:  # the parent's decorators or return annotation: their names are needed too
                deps |= supercall.names_in([*node.decorators, *([node.returns] if node.returns else [])]).read
        return Member(child.key, node, frozenset(deps), child.text)

    def _unroll(
        self, fn: cst.FunctionDef, inherited: dict[str, Member], deps: set[str]
    ) -> tuple[cst.FunctionDef, set[str]]:
        body: list[tuple[cst.BaseStatement, bool]] = []  # (statement, came from an inlined parent body)
        unbound: dict[str, cst.CSTNode] = {}  # locals nothing binds any more (a left-out argument) -> the call
        fn, origin = self._hoist(fn, inherited)
        skip = 0
        for stmt in fn.body.body:
            if skip:  # folded into the parent's body by the bare call before it
                skip -= 1
                continue
            found = supercall.statement_call(stmt)
            target = inherited.get(supercall.super_method(found.call)) if found else None
            if target is None or not isinstance(target.node, cst.FunctionDef):
                body.append((stmt, False))
                continue
            at = origin.get(id(stmt), stmt)
            try:
                inlined, binding = supercall.inline(stmt, found, target.node, fn, self.error(at), self.warn(at))
            except supercall.KeepCall:
                self.warn(at)(
                    f"`x = super().{target.node.name.value}(...)`: the parent's body does not return once, at its "
                    "end, so it is not inlined; the call stays, reaching the flattened class's bases (as HF keeps it)"
                )
                body.append((stmt, False))
                continue
            if binding.adopt_signature:
                fn = fn.with_changes(params=supercall.adopt_signature(fn, target.node, self.error(fn)))
            # the parent's signature stays out unless adopted: its annotations (`config: MllamaTextConfig`) are no deps
            deps |= target.deps if binding.adopt_signature else target.deps & _all_names(inlined)
            body += [(s, True) for s in inlined]
            unbound |= dict.fromkeys(binding.unbound, at)
            skip = binding.consumed
        if any(from_parent for _, from_parent in body):
            body = _drop_dead_locals(self._fold_after_super(body, unbound))
            if fn.name.value == "__init__":
                parent_init = inherited.get("__init__")
                if not self.init_call_stays or parent_init is None or _starts_with_init_call(parent_init.node):
                    body = _init_call_first(body)
                body = _post_init_last(body)
        self._check_unbound(fn, [s for s, _ in body], unbound)
        return fn.with_changes(body=fn.body.with_changes(body=[s for s, _ in body])), deps

    def _check_unbound(self, fn: cst.FunctionDef, body: list[cst.BaseStatement], unbound: dict) -> None:
        """A parameter the super() call left out (or a local `del x` removed) that the merged body still reads."""
        if not unbound:
            return
        names = supercall.names_in(body)
        free = names.read - names.stored - supercall._own_names(fn)
        for name, at in sorted(unbound.items(), key=lambda item: item[0]):
            if name in free:
                raise self.error(at)(
                    f"'{name}' is read by the parent's {fn.name.value} but nothing binds it here: pass it to the "
                    f"super() call, or give the method a parameter '{name}'"
                )

    def _fold_after_super(
        self, body: list[tuple[cst.BaseStatement, bool]], unbound: dict[str, cst.CSTNode]
    ) -> list[tuple[cst.BaseStatement, bool]]:
        """`self.x = ...` after a super() call replaces the parent's assignment; `del self.x` removes it, and
        `del x` the parent's assignment to the local x (HF; the local must then be unused)."""
        out: list[tuple[cst.BaseStatement, bool]] = []
        for stmt, from_parent in body:
            if not from_parent and _repeats_parent(stmt, out):
                continue
            local = _deleted_local(stmt) if not from_parent else None
            if local is not None and (index := _last_local_assignment(out, local)) is not None:
                del out[index]
                unbound[local] = stmt
                continue
            if not from_parent and (index := _nested_assignment(stmt, out)) is not None:
                del out[index]  # `del self.a.b`: HF removes the parent's `self.a.b = ...` (Python: the same end state)
                continue
            attr = _self_attr(stmt, cst.Del) if not from_parent else None
            if attr is not None:
                if (index := _last_assignment(out, attr)) is not None:
                    del out[index]
                    self.deleted.append((attr, stmt))
                else:
                    self.warn(stmt)(
                        f"`del self.{attr}`: the parent's code does not assign self.{attr} here; the marker is "
                        f"dropped, as HF does (Python would delete what a base class set)"
                    )
                continue
            attr = _self_attr(stmt, cst.Assign) if not from_parent else None
            index = _last_assignment(out, attr) if attr is not None else None
            placement = _placement(stmt, out, index) if index is not None else "keep"
            if placement == "replace-read":
                self.warn(stmt)(
                    f"self.{attr} = ... replaces the parent's assignment in place, so the parent's code after it "
                    f"reads the new value (HF's meaning; in Python it would read the parent's value first)"
                )
            if placement != "keep":
                out[index] = (stmt, False)
                continue
            out.append((stmt, from_parent))
        return out

    def _hoist(
        self, fn: cst.FunctionDef, inherited: dict[str, Member]
    ) -> tuple[cst.FunctionDef, dict[int, cst.CSTNode]]:
        """Nested `super().f(...)` calls moved into locals (see `hoist`); new statements map to their source line."""
        methods = {key for key, mem in inherited.items() if isinstance(mem.node, cst.FunctionDef)}
        if not supercall.names_in([fn.body]).super_calls:
            return fn, {}
        names = supercall.names_in([fn])
        taken = names.read | names.stored
        body, origin = [], {}
        for stmt in fn.body.body:
            if supercall.statement_call(stmt) is not None:
                body.append(stmt)
                continue
            for new in hoist(stmt, methods, taken, self.error(stmt), self.warn(stmt)):
                origin[id(new)] = stmt
                body.append(new)
        return fn.with_changes(body=fn.body.with_changes(body=body)), origin

    def _check_deleted_attrs(self, members: list[Member]) -> None:
        """`del self.x` removed the parent's assignment. Reads of `self.x` that nothing else assigns are kept,
        as HF keeps them (they fail only if reached), with a warning."""
        if not self.deleted:
            return
        nodes = [mem.node.body if isinstance(mem.node, cst.FunctionDef) else mem.node for mem in members]
        used = supercall.names_in(nodes).self_attrs
        assigned = {key for mem in members if (key := mem.key)} | {
            a for node in nodes for stmt in _statements(node) if (a := _self_attr(stmt, cst.Assign))
        }
        for attr, stmt in self.deleted:
            if attr in used and attr not in assigned:
                self.warn(stmt)(f"`del self.{attr}` removes the parent's attribute, but self.{attr} is still read")


def _may_call_bases(member: Member, bases: set[str]) -> bool:
    """Only the child's own methods can name its bases; its source text says whether one does."""
    if not isinstance(member.node, cst.FunctionDef) or member.text is None:
        return False  # inherited (renamed) code, or no source to look at
    return any(f"{base}." in member.text or f"{base}()." in member.text for base in bases)


def _standing_for(bases: set[str]) -> set[str]:
    """Classes HF takes a class's bases for in `Base.f(...)` calls: `nn.Module` when one is a
    `GradientCheckpointingLayer`, `PreTrainedModel` when one is a `...PreTrainedModel`."""
    found = set()
    if any(b.rpartition(".")[2] == CHECKPOINTING for b in bases):
        found.add("nn.Module")
    if any("PreTrainedModel" in b for b in bases):
        found.add("PreTrainedModel")
    return found


class _BaseCalls(cst.CSTTransformer):
    """HF's `Base.f(args)` / `Base().f(args)` (no `self`) for one of the class's bases: the next implementation
    up, skipping the parent's body, which is `super().f(args)` in the flattened class. The same for a base the
    flattened class keeps from its parent (`nn.Module.__init__()` in gemma2's rotary embedding), with or without
    `self`, and for what HF takes those bases for (`_standing_for`)."""

    def __init__(self, bases: set[str], kept: set[str] = frozenset()):
        self.bases, self.kept, self.used = bases, set(kept), set()

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        func = updated.func
        if not isinstance(func, cst.Attribute):
            return updated
        owner = func.value
        with_self = bool(updated.args) and is_name(updated.args[0].value, "self")
        if isinstance(owner, cst.Call) and not owner.args:
            base = _code(owner.func)
        elif isinstance(owner, (cst.Name, cst.Attribute)):
            base = _code(owner)
        else:
            return updated
        self_form = with_self and not isinstance(owner, cst.Call)
        if base not in self.bases and base not in self.kept:
            return updated
        args = updated.args
        if self_form:
            # `PreTrainedModel._init_weights(self, m)` for a base the class keeps (the flattened one with `self` is
            # the escape hatch, never merged): HF writes `super()._init_weights(m)`, and the base stays
            args = args[1:]
        elif base in self.bases:
            self.used.add(base)
        return updated.with_changes(func=func.with_changes(value=cst.Call(cst.Name("super"))), args=args)


def _is_placeholder(node: cst.BaseStatement) -> bool:
    """`pass` or `...`: a body that only has to exist, not a member (HF drops both)."""
    inner = single(node)
    return isinstance(inner, cst.Pass) or isinstance(inner, cst.Expr) and isinstance(inner.value, cst.Ellipsis)


def _is_attribute(node: cst.BaseStatement) -> bool:
    """A class-level assignment (`model_type = "llama"`, `config: LlamaConfig`)."""
    return isinstance(single(node), (cst.Assign, cst.AnnAssign))


def _is_property(node: cst.BaseStatement) -> bool:
    return isinstance(node, cst.FunctionDef) and any(is_name(d.decorator, "property") for d in node.decorators)


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


CHECKPOINTING = "GradientCheckpointingLayer"  # HF's layer base: an `nn.Module`, and HF takes it for one


def _switched(base: cst.Arg, extras: list[cst.Arg]) -> cst.Arg:
    """A base of the flattened parent that an extra base of the child's stands for is that base (HF's rule): one
    that shares a suffix starting a word with it (`class CohereCompassTextModel(Qwen3VLTextModel,
    CohereCompassPreTrainedModel)` puts `CohereCompassPreTrainedModel` where `CohereCompassTextPreTrainedModel` was;
    `OmniModalProcessorMixin` takes `ProcessorMixin`'s place), or `GradientCheckpointingLayer` for `nn.Module`."""
    name = _code(base.value)
    for extra in extras:
        other = _code(extra.value)
        if name == "nn.Module" and other.rpartition(".")[2] == CHECKPOINTING:
            return base.with_changes(value=extra.value)
        if not (is_name(base.value) and is_name(extra.value)):
            continue
        suffix = name if other.endswith(name) and len(other) > len(name) else common_suffix(name, other)
        if suffix and suffix[0].isupper():
            return base.with_changes(value=extra.value)
    return base


def _without_plain_module(bases: list[cst.Arg], extras: list[cst.Arg]) -> list[cst.Arg]:
    """A child's extra `nn.Module` base beside the parent's `GradientCheckpointingLayer` (one already) goes (HF)."""
    if not any(_code(b.value).rpartition(".")[2] == CHECKPOINTING for b in bases):
        return bases
    plain = {id(e) for e in extras if _code(e.value) == "nn.Module"}
    return [b for b in bases if id(b) not in plain]


def _header_deps(parent: ParentClass) -> set[str]:
    names = supercall.names_in([*parent.node.bases, *parent.node.keywords, *parent.node.decorators])
    return names.read


NO_INHERIT = "no_inherit_decorator"  # HF 5.x's marker: do not carry the parent's decorators over


def _no_inherit(node: cst.ClassDef | cst.FunctionDef) -> bool:
    return any(_code(d.decorator).rpartition(".")[2] == NO_INHERIT for d in node.decorators)


def _own_decorators(node: cst.ClassDef | cst.FunctionDef) -> list[cst.Decorator]:
    return [d for d in node.decorators if _code(d.decorator).rpartition(".")[2] != NO_INHERIT]


DEPRECATION = "deprecate_kwarg"  # a decorator that only adds a deprecated keyword: HF 5.x keeps the parent's with it


def _only_deprecations(decorators: Sequence[cst.Decorator]) -> bool:
    """`@deprecate_kwarg("past_key_values", ...)` and nothing else."""
    return bool(decorators) and all(
        isinstance(d.decorator, cst.Call) and _code(d.decorator.func).rpartition(".")[2] == DEPRECATION
        for d in decorators
    )


def _method_decorators(child: cst.FunctionDef, parent: cst.FunctionDef) -> Sequence[cst.Decorator] | None:
    """An overriding method's decorators, None for the child's own. The parent's when the child has none; when the
    child's are only `@deprecate_kwarg(...)`, the parent's other ones, in its order, then the child's (HF 5.x:
    `@can_return_tuple @auto_docstring` stay above a child's deprecation). Any other decorator replaces the list."""
    if _no_inherit(child):  # HF 5.x: `@no_inherit_decorator` keeps the parent's decorators out, and goes itself
        return _own_decorators(child)
    if not parent.decorators or (child.decorators and not _only_deprecations(child.decorators)):
        return None
    own = {_code(d.decorator) for d in child.decorators}
    return [*(d for d in parent.decorators if _code(d.decorator) not in own), *child.decorators]


def _inherit_function_parts(child: cst.FunctionDef, parent: cst.FunctionDef) -> cst.FunctionDef:
    """Decorators, return annotation and docstring: the child's if it has them, else the parent's (decorators:
    `_method_decorators`)."""
    changes = {}
    decorators = _method_decorators(child, parent)
    if decorators is not None:
        changes["decorators"] = decorators
    if child.returns is None and parent.returns is not None:
        changes["returns"] = parent.returns
    doc = _docstring(parent)
    if doc is not None and _docstring(child) is None:
        changes["body"] = child.body.with_changes(body=[doc, *child.body.body])
    return child.with_changes(**changes) if changes else child


_PURE = (
    cst.Name,
    cst.Attribute,
    cst.Integer,
    cst.Float,
    cst.SimpleString,
    cst.BinaryOperation,
    cst.UnaryOperation,
    cst.Comparison,
    cst.BooleanOperation,
    cst.Tuple,
    cst.List,
    cst.Subscript,
)


class _AllNames(cst.CSTVisitor):
    def __init__(self) -> None:
        self.names: set[str] = set()
        self.pure = True

    def visit_Name(self, node: cst.Name) -> None:
        self.names.add(node.value)

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.BaseExpression) and not isinstance(node, _PURE):
            self.pure = False
        return super().on_visit(node)


def _all_names(nodes: list[cst.CSTNode]) -> set[str]:
    """Every name in the nodes, nested functions included."""
    found = _AllNames()
    for node in nodes:
        node.visit(found)
    return found.names


def _drop_dead_locals(body: list[tuple[cst.BaseStatement, bool]]) -> list[tuple[cst.BaseStatement, bool]]:
    """An inlined parent assignment whose locals nothing reads any more (the child replaced every
    statement that used them) is dead code. Only side-effect-free values are dropped. One backward
    pass: `later` holds every name read after the current statement."""
    later: set[str] = set()
    kept: list[tuple[cst.BaseStatement, bool]] = []
    for stmt, from_parent in reversed(body):
        names = _AllNames()
        stmt.visit(names)
        if from_parent and isinstance(inner := single(stmt), cst.Assign) and len(inner.targets) == 1:
            targets = {t.value for t in supercall._flat_names(stmt.body[0].targets[0].target)}
            value = _AllNames()
            stmt.body[0].value.visit(value)
            if targets and value.pure and not targets & later:
                continue
        kept.append((stmt, from_parent))
        later |= names.names
    return kept[::-1]


def _self_attr(stmt: cst.BaseStatement, kind: type) -> str | None:
    """`x` for `self.x = ...` (kind Assign) or `del self.x` (kind Del)."""
    if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and isinstance(stmt.body[0], kind)):
        return None
    inner = stmt.body[0]
    target = inner.target if kind is cst.Del else (inner.targets[0].target if len(inner.targets) == 1 else None)
    if isinstance(target, cst.Attribute) and is_name(target.value, "self"):
        return target.attr.value
    return None


def _deleted_local(stmt: cst.BaseStatement) -> str | None:
    """`x` for `del x`."""
    inner = single(stmt)
    return inner.target.value if isinstance(inner, cst.Del) and isinstance(inner.target, cst.Name) else None


def _nested_assignment(stmt: cst.BaseStatement, body: list[tuple[cst.BaseStatement, bool]]) -> int | None:
    """For `del self.a.b`: the inlined parent statement that last assigned `self.a.b`."""
    inner = single(stmt)
    if not (isinstance(inner, cst.Del) and isinstance(inner.target, cst.Attribute)):
        return None
    if not isinstance(inner.target.value, cst.Attribute):
        return None  # `del self.x` has its own rule
    code = _code(inner.target)
    for index in range(len(body) - 1, -1, -1):
        node, from_parent = body[index]
        assign = single(node)
        if from_parent and isinstance(assign, cst.Assign) and [_code(t.target) for t in assign.targets] == [code]:
            return index
    return None


def _last_local_assignment(body: list[tuple[cst.BaseStatement, bool]], name: str) -> int | None:
    """The inlined parent statement that last assigned the local `name` (`name = ...`)."""
    for index in range(len(body) - 1, -1, -1):
        stmt, from_parent = body[index]
        inner = single(stmt)
        if (
            from_parent
            and isinstance(inner, cst.Assign)
            and len(inner.targets) == 1
            and is_name(inner.targets[0].target, name)
        ):
            return index
    return None


def _last_assignment(body: list[tuple[cst.BaseStatement, bool]], attr: str) -> int | None:
    for index in range(len(body) - 1, -1, -1):
        stmt, from_parent = body[index]
        if from_parent and _self_attr(stmt, cst.Assign) == attr:
            return index
    return None


def _pure(node: cst.CSTNode) -> bool:
    return not find_all(node, lambda n: isinstance(n, (cst.Call, cst.Await, cst.Yield, cst.NamedExpr, cst.Lambda)))


def _repeats_parent(stmt: cst.BaseStatement, out: list[tuple[cst.BaseStatement, bool]]) -> bool:
    """The child repeats a parent's local assignment word for word (`n = self.patches.count`), and nothing since
    changed what it reads or binds: the inlined one already holds the value, so the child's is dropped (HF)."""
    inner = single(stmt)
    if not (isinstance(inner, cst.Assign) and all(isinstance(t.target, cst.Name) for t in inner.targets)):
        return False
    if not _pure(inner.value):
        return False
    code = _code(stmt).strip()
    for index in range(len(out) - 1, -1, -1):
        if out[index][1] and _code(out[index][0]).strip() == code:
            return not _changes_what_it_reads(inner.value, [s for s, _ in out[index + 1 :]])
    return False


def _starts_with_init_call(parent: cst.BaseStatement) -> bool:
    """Whether the parent's `__init__` calls `super().__init__(...)` first (after its docstring). HF from 4.56 on
    moves that call first in the flattened `__init__` only then; a parent that binds things before it (HF 5.x
    processors: `self.image_token = ...` then `super().__init__(...)`) keeps its order."""
    if not isinstance(parent, cst.FunctionDef):
        return True
    body = strip_docstring(list(parent.body.body))
    inner = single(body[0]) if body else None
    return isinstance(inner, cst.Expr) and is_super_call(inner.value) and inner.value.func.attr.value == "__init__"


def _init_call_first(body: list[tuple[cst.BaseStatement, bool]]) -> list[tuple[cst.BaseStatement, bool]]:
    """HF's rule for a flattened `__init__`: the base class's `super().__init__(...)`, which the parent's body
    made last (configs) or anywhere, runs first, so the model's own assignments are the ones that stay."""
    start = 1 if body and is_docstring(body[0][0]) else 0
    for index, (stmt, _) in enumerate(body):
        inner = single(stmt)
        if isinstance(inner, cst.Expr) and is_super_call(inner.value) and inner.value.func.attr.value == "__init__":
            reads = supercall.names_in([inner]).read
            # never above what binds its arguments (`kwargs = {"a": a, **kwargs}` from an unrolled call)
            for before in range(index - 1, start - 1, -1):
                if supercall.names_in([body[before][0]]).stored & reads:
                    start = before + 1
                    break
            if index > start:
                return [*body[:start], body[index], *body[start:index], *body[index + 1 :]]
            break
    return body


def _post_init_last(body: list[tuple[cst.BaseStatement, bool]]) -> list[tuple[cst.BaseStatement, bool]]:
    """HF's rule for a flattened `__init__`: `self.post_init()` (which initialises the weights) runs last, once,
    after the child's own layers exist."""
    calls = [i for i, (stmt, _) in enumerate(body) if _is_post_init(stmt)]
    if not calls or calls == [len(body) - 1]:
        return body
    last = body[calls[-1]]
    return [item for i, item in enumerate(body) if i not in calls] + [last]


def _is_post_init(stmt: cst.BaseStatement) -> bool:
    inner = single(stmt)
    return (
        isinstance(inner, cst.Expr)
        and isinstance(inner.value, cst.Call)
        and not inner.value.args
        and isinstance(inner.value.func, cst.Attribute)
        and is_name(inner.value.func.value, "self")
        and inner.value.func.attr.value == "post_init"
    )


def _placement(stmt: cst.BaseStatement, body: list[tuple[cst.BaseStatement, bool]], index: int) -> str:
    """Where the child's `self.x = v` after an unrolled super() goes: "replace" the parent's assignment in
    place (HF's reading), "replace-read" (the same, though parent code in between reads self.x: it now sees
    the child's value, as the author meant), or "keep" both, when something in between writes what `v`
    reads (moving `v` up would change its value)."""
    between = [s for s, _ in body[index + 1 :]]
    between_names = supercall.names_in(between)
    if _changes_what_it_reads(stmt.body[0].value, between):
        return "keep"
    return "replace-read" if _self_attr(stmt, cst.Assign) in between_names.self_attrs else "replace"


def _changes_what_it_reads(value: cst.BaseExpression, between: list[cst.BaseStatement]) -> bool:
    """Whether `between` assigns a local that `value` reads, or a `self.` attribute it reads."""
    reads = supercall.names_in([value])
    stored = supercall.names_in(between).stored
    attrs = {a for s in between if (a := _self_attr(s, cst.Assign))}
    return bool(reads.read & stored or reads.self_attrs & attrs)


def _statements(node: cst.CSTNode) -> list[cst.BaseStatement]:
    """Every statement inside a node (nested blocks too)."""
    return find_all(node, lambda n: isinstance(n, cst.SimpleStatementLine))
