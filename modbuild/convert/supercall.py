"""Unroll `super().f(...)` statements: inline the parent's body with the call's arguments bound.

Binding follows Python's own rules (positional, keyword, defaults, `*args`, `**kwargs`). Where a
binding cannot be expressed without changing what the child's code means, this is an error that
names the call, never a silent re-binding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import libcst as cst

from modbuild.convert.nodes import has_decorator, is_name, is_super_call, single, strip_docstring
from modbuild.convert.source import ConvertError

SUPER_KWARGS = "super_kwargs"  # `**super_kwargs` in a child signature: "the parent's full signature"


def super_method(call: cst.BaseExpression) -> str | None:
    """`f` if the expression is `super().f(...)` or `super(Cls, self).f(...)`."""
    if is_super_call(call):
        return call.func.attr.value
    return None


@dataclass
class SuperStatement:
    """A statement-level super call: `super().f(...)`, `return super().f(...)` or `x = super().f(...)`."""

    call: cst.Call
    form: str  # "expr" | "return" | "assign"
    target: cst.BaseAssignTargetExpression | None = None


def statement_call(stmt: cst.BaseStatement) -> SuperStatement | None:
    if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1):
        return None
    inner = stmt.body[0]
    value = getattr(inner, "value", None)
    if value is None or not super_method(value):
        return None
    if isinstance(inner, cst.Expr):
        return SuperStatement(value, "expr")
    if isinstance(inner, cst.Return):
        return SuperStatement(value, "return")
    if isinstance(inner, cst.Assign) and len(inner.targets) == 1:
        return SuperStatement(value, "assign", inner.targets[0].target)
    return None


class _Names(cst.CSTVisitor):
    """Variables read and stored, `self.x` attributes used, names inside f-strings, and returns."""

    def __init__(self) -> None:
        self.read: set[str] = set()
        self.stored: set[str] = set()
        self.self_attrs: set[str] = set()
        self.in_fstrings: set[str] = set()
        self.returns_value = False
        self.super_calls = 0
        self._fstring_depth = 0

    def visit_Name(self, node: cst.Name) -> None:
        self.read.add(node.value)
        if self._fstring_depth:
            self.in_fstrings.add(node.value)

    def visit_FormattedStringExpression(self, node: cst.FormattedStringExpression) -> None:
        self._fstring_depth += 1

    def leave_FormattedStringExpression(self, node: cst.FormattedStringExpression) -> None:
        self._fstring_depth -= 1

    def visit_Call(self, node: cst.Call) -> None:
        if isinstance(node.func, cst.Name) and node.func.value == "super":
            self.super_calls += 1

    # Attribute names and keyword names are not variables.
    def visit_Attribute(self, node: cst.Attribute) -> bool:
        if isinstance(node.value, cst.Name) and node.value.value == "self":
            self.self_attrs.add(node.attr.value)
        node.value.visit(self)
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        node.value.visit(self)
        return False

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        self.stored.update(n.value for n in _flat_names(node.target))

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.stored.update(n.value for n in _flat_names(node.target))

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self.stored.update(n.value for n in _flat_names(node.target))

    def visit_For(self, node: cst.For) -> None:
        self.stored.update(n.value for n in _flat_names(node.target))

    def visit_Return(self, node: cst.Return) -> None:
        if node.value is not None:
            self.returns_value = True

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self.stored.add(node.name.value)
        return False


def _flat_names(node: cst.BaseExpression) -> list[cst.Name]:
    if isinstance(node, cst.Name):
        return [node]
    if isinstance(node, (cst.Tuple, cst.List)):
        return [n for el in node.elements for n in _flat_names(el.value)]
    return []


def names_in(nodes) -> _Names:
    visitor = _Names()
    for node in nodes:
        node.visit(visitor)
    return visitor


def _is_static(fn: cst.FunctionDef) -> bool:
    return has_decorator(fn, "staticmethod")


@dataclass
class Binding:
    values: dict[str, cst.BaseExpression] = field(default_factory=dict)
    adopt_signature: bool = False
    unbound: set[str] = field(default_factory=set)  # parameters left to the child's scope, where nothing binds them
    consumed: int = 0  # statements after a bare call folded into the inlined body (HF)


def bind(
    call: cst.Call,
    parent: cst.FunctionDef,
    child: cst.FunctionDef,
    err: Callable[[str], ConvertError],
    warn: Callable[[str], None] = lambda message: None,
) -> Binding:
    """The call's arguments bound to the parent's parameters as Python binds them. Arguments that do not fit
    the parent's signature (`super().__init__(self, config)`) are HF's dialect: HF ignores a super() call's
    arguments, so the parent's body reads the child's variables of the same names; so do we, with a warning."""
    try:
        return _bind(call, parent, child, err, warn)
    except _Unfit as unfit:
        warn(
            f"super().{parent.name.value}(...): {unfit}; as HF does, the call's arguments are ignored and the "
            f"parent's body reads the child's variables of the same names"
        )
        return _hf_binding(parent, child)


class KeepCall(Exception):
    """`x = super().f(...)` that cannot be inlined: kept as a call, as HF keeps every such assignment."""


class _Unfit(Exception):
    """Arguments that Python could not bind to the parent's parameters."""


def _hf_binding(parent: cst.FunctionDef, child: cst.FunctionDef) -> Binding:
    """HF's meaning of any super() call: each parent parameter is the child's variable of that name; one the
    child does not have is unbound (an error if the merged method still reads it)."""
    out = Binding()
    own = _own_names(child)
    for param in _all_params(parent.params)[0 if _is_static(parent) else 1 :]:
        name = param.name.value
        out.values[name] = cst.Name(name)
        if name not in own:
            out.unbound.add(name)
    return out


def _bind(
    call: cst.Call,
    parent: cst.FunctionDef,
    child: cst.FunctionDef,
    err: Callable[[str], ConvertError],
    warn: Callable[[str], None],
) -> Binding:
    params = parent.params
    positional = [*params.posonly_params, *params.params][0 if _is_static(parent) else 1 :]
    by_name = {p.name.value: p for p in (*positional, *params.kwonly_params)}
    star = params.star_arg.name.value if isinstance(params.star_arg, cst.Param) else None
    star_kw = params.star_kwarg.name.value if params.star_kwarg else None
    child_kw = child.params.star_kwarg.name.value if child.params.star_kwarg else None
    out = Binding()
    extra_pos, extra_kw, mappings = [], [], []
    for index, arg in enumerate(call.args):
        if arg.star == "*":
            if star is None:
                raise _Unfit(f"`*{_code(arg.value)}` passed, but the parent has no *args")
            out.values[star] = arg.value
        elif arg.star == "**":
            if is_name(arg.value, SUPER_KWARGS) and child_kw == SUPER_KWARGS:
                out.adopt_signature = True
            elif star_kw is None:
                raise _Unfit(f"`**{_code(arg.value)}` passed, but the parent has no **kwargs")
            else:
                mappings.append(arg.value)
        elif arg.keyword is not None:
            name = arg.keyword.value
            if name in out.values:
                raise _Unfit(f"multiple values for argument '{name}'")
            if name in by_name:
                out.values[name] = arg.value
            elif star_kw is not None:
                extra_kw.append(arg)
            else:
                raise _Unfit(f"unexpected keyword argument '{name}' ({_sig(parent)})")
        elif index < len(positional):
            out.values[positional[index].name.value] = arg.value
        elif star is not None:
            extra_pos.append(arg)
        else:
            raise _Unfit(f"{len(call.args)} positional arguments for {len(positional)} ({_sig(parent)})")
    if child_kw == SUPER_KWARGS:  # the signature marker alone means the parent's signature (HF: emu3's
        out.adopt_signature = True  # `def forward(**super_kwargs): super().forward()`)
    if extra_pos:
        out.values[star] = cst.Tuple([cst.Element(a.value) for a in extra_pos])
    if out.adopt_signature and star_kw and mappings:
        mappings.append(cst.Name(star_kw))  # the parent's **kwargs, adopted by the child, passed on too
    if extra_kw or len(mappings) > 1:  # `f(a=1, **extra, **kwargs)` into a parent's **kwargs: one dict
        elements = [cst.DictElement(cst.SimpleString(f'"{a.keyword.value}"'), a.value) for a in extra_kw]
        out.values[star_kw] = cst.Dict(elements + [cst.StarredDictElement(v) for v in mappings])
    elif mappings:
        out.values[star_kw] = mappings[0]
    _fill_missing(out, parent, positional, star, star_kw, _own_names(child), err, warn)
    return out


def _own_names(fn: cst.FunctionDef) -> set[str]:
    return {p.name.value for p in _all_params(fn.params)}


def _fill_missing(out: Binding, parent: cst.FunctionDef, positional, star, star_kw, own, err, warn) -> None:
    """Parameters the call leaves out. The child's own parameter of the same name fills one (HF's meaning:
    `def __init__(self, config): super().__init__()` hands `config` on); else the parent's default."""
    for param in (*positional, *parent.params.kwonly_params):
        name = param.name.value
        if name in out.values:
            continue
        if out.adopt_signature or name in own:
            out.values[name] = cst.Name(name)
            if param.default is not None and not out.adopt_signature:
                warn(
                    f"super().{parent.name.value}(...) leaves out '{name}': it takes the child's '{name}' (HF's "
                    f"meaning), not the parent's default {_code(param.default)} (Python's)"
                )
        elif param.default is not None:
            out.values[name] = param.default
        else:  # HF: the parent's body reads the child's variable; fine while nothing left reads it (checked later)
            out.values[name] = cst.Name(name)
            out.unbound.add(name)
    for name, empty in ((star, cst.Tuple([])), (star_kw, cst.Dict([]))):
        if name and name not in out.values:
            out.values[name] = cst.Name(name) if out.adopt_signature else empty


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def _sig(fn: cst.FunctionDef) -> str:
    return f"def {fn.name.value}({_code(fn.params)})"


def inline(
    stmt: cst.BaseStatement,
    found: SuperStatement,
    parent: cst.FunctionDef,
    child: cst.FunctionDef,
    err: Callable[[str], ConvertError],
    warn: Callable[[str], None] = lambda message: None,
) -> tuple[list[cst.BaseStatement], Binding]:
    """The statements that replace one statement-level super() call."""
    binding = bind(found.call, parent, child, err, warn)
    body = strip_docstring(list(parent.body.body))
    parent_names = names_in(body)
    name = parent.name.value
    if found.form == "expr" and parent_names.returns_value:
        rest = _following(child, stmt)
        if rest:  # HF: what follows replaces the parent's assignments of the same targets, in place
            body = _fold_into(body, rest)
            if body is None:
                raise err(f"super().{name}(...) returns a value here; use `return super().{name}(...)` or assign it")
            binding.consumed = len(rest)
        # HF's meaning of a closing bare call: the parent's body, returning as the parent does (Python: None)
        warn(f"super().{name}(...) ends the method: it returns what the parent's {name} returns, as HF reads it")
    if found.form == "assign":  # a parent body that does not return once, at its end, cannot be inlined here
        body = _return_as_assignment(body, found.target, lambda: KeepCall(name))
    before, after = _split_at(child, stmt, binding.consumed)
    visible = before.stored | {p.name.value for p in _all_params(child.params)}
    needed = (visible & after.read) | (after.read - after.stored)
    prelude, renames = [], {}
    in_fstrings = parent_names.in_fstrings
    for param, value in binding.values.items():
        if is_name(value, param) or param not in parent_names.read:
            continue
        if param not in parent_names.stored and _substitutable(value, parent_names, param in in_fstrings):
            renames[param] = value  # `super().f(y)` for `def f(self, x)`: the body reads y
            continue
        target = param
        if (
            param in needed
        ):  # the child's own `param` is still in use after the call: the parent's gets a name of its own
            target = _fresh(f"super_{param}", parent_names.read | parent_names.stored | visible | after.read)
            renames[param] = cst.Name(target)
        prelude.append(cst.SimpleStatementLine([cst.Assign([cst.AssignTarget(cst.Name(target))], value)]))
    parent_locals = parent_names.stored - set(binding.values) - {"self", "cls", "_"}  # `_`: a throwaway
    clobbered = parent_locals & visible & after.read
    if clobbered:
        raise err(f"inlining super().{name}(...) would overwrite the child's local(s) {sorted(clobbered)}")
    borrowed = parent_locals & (after.read - after.stored)
    if borrowed:  # a name the child never binds: HF's reading is the parent's local of that name
        warn(f"after super().{name}(...), {sorted(borrowed)} is the parent's local (HF's meaning), not a global")
    if renames:
        body = [s.visit(_Substitute(renames)) for s in body]
    return prelude + body, binding


def _fresh(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "_"
    return name


def _following(fn: cst.FunctionDef, stmt: cst.BaseStatement) -> list[cst.BaseStatement]:
    body = list(fn.body.body)
    return body[next(i for i, s in enumerate(body) if s is stmt) + 1 :]


def _target_code(stmt: cst.BaseStatement) -> tuple[str, str] | None:
    """("assign" | "del", code of the target) for `t = v` or `del t` with one target."""
    inner = single(stmt)
    if isinstance(inner, cst.Assign) and len(inner.targets) == 1:
        return "assign", _code(inner.targets[0].target)
    if isinstance(inner, cst.Del):
        return "del", _code(inner.target)
    return None


def _fold_into(body: list[cst.BaseStatement], rest: list[cst.BaseStatement]) -> list[cst.BaseStatement] | None:
    """HF's update of a parent body by the statements after a bare super() call: an assignment replaces the
    parent's assignment of the same target (by its code) in place, `del t` removes it. None when a statement
    is neither (Python would run it after a return)."""
    body = list(body)
    for stmt in rest:
        found = _target_code(stmt)
        spots = [i for i, s in enumerate(body) if found and _target_code(s) == ("assign", found[1])]
        if not spots:
            return None
        if found[0] == "assign":
            body[spots[-1]] = stmt
        else:
            del body[spots[-1]]
    return body


def _split_at(fn: cst.FunctionDef, stmt: cst.BaseStatement, consumed: int = 0) -> tuple[_Names, _Names]:
    """Names used in the child's body before and after one statement (but for the `consumed` statements after it,
    folded into the inlined body, and `del x` markers, which remove the parent's x rather than read it)."""
    body = list(fn.body.body)
    index = next(i for i, s in enumerate(body) if s is stmt)
    after = names_in(
        [s for s in body[index + 1 + consumed :] if not (isinstance(d := single(s), cst.Del) and is_name(d.target))]
    )
    if (found := statement_call(stmt)) is not None and found.target is not None:
        after.stored |= {n.value for n in _flat_names(found.target)}
    return names_in(body[:index]), after


def _return_as_assignment(
    body: list[cst.BaseStatement], target, error: Callable[[], ConvertError]
) -> list[cst.BaseStatement]:
    *rest, last = body or [cst.SimpleStatementLine([cst.Pass()])]
    if names_in(rest).returns_value or not isinstance(single(last), cst.Return):
        raise error()
    value = last.body[0].value
    if value is None:
        raise error()
    if _code(target) == _code(value).strip("()"):
        return rest  # `x = super().f()` where the parent ends with `return x` (or `a, b` / `return a, b`)
    return [*rest, cst.SimpleStatementLine([cst.Assign([cst.AssignTarget(target)], value)])]


def _substitutable(value: cst.BaseExpression, parent_names: _Names, in_fstring: bool) -> bool:
    """A name the parent body does not use, or a literal: safe to write in place of the parameter.

    Literals stay out of f-strings, where `f"{'qwen'}"` would read worse than an assignment."""
    if isinstance(value, cst.Name):
        return value.value not in parent_names.read or value.value in ("True", "False", "None")
    return not in_fstring and isinstance(value, (cst.Integer, cst.Float, cst.SimpleString))


class _Substitute(cst.CSTTransformer):
    """Replace variables (not attributes or keyword names) in an inlined body."""

    def __init__(self, renames: dict[str, cst.BaseExpression]):
        self.renames = renames

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.Attribute:
        return updated.with_changes(attr=original.attr)

    def leave_Arg(self, original: cst.Arg, updated: cst.Arg) -> cst.Arg:
        return updated.with_changes(keyword=original.keyword)

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.BaseExpression:
        return self.renames.get(original.value, updated)


def _all_params(params: cst.Parameters) -> list[cst.Param]:
    out = [*params.posonly_params, *params.params, *params.kwonly_params]
    out += [p for p in (params.star_arg, params.star_kwarg) if isinstance(p, cst.Param)]
    return out


def _defaults_last(params: list[cst.Param]) -> bool:
    seen_default = False
    for param in params:
        if param.default is None and seen_default:
            return False
        seen_default |= param.default is not None
    return True


def adopt_signature(child: cst.FunctionDef, parent: cst.FunctionDef, err) -> cst.Parameters:
    """`def f(self, x, **super_kwargs)` takes the parent's parameters in place of `**super_kwargs`."""
    own = {p.name.value for p in _all_params(child.params)}
    cp, pp = child.params, parent.params
    # HF's order: the parent's parameters where they were (the child's version of one it redefines), then the
    # child's new ones; the child's own order when that would put a required parameter after a default.
    mine = {p.name.value: p for p in cp.params}
    parents_order = [mine.get(p.name.value, p) for p in pp.params]
    parents_order += [p for p in cp.params if p.name.value not in {q.name.value for q in pp.params}]
    childs_order = [*cp.params, *(p for p in pp.params if p.name.value not in own)]
    params = next((order for order in (parents_order, childs_order) if _defaults_last(order)), None)
    if params is None:
        bad = next(
            p.name.value
            for i, p in enumerate(childs_order)
            if p.default is None and not _defaults_last(childs_order[: i + 1])
        )
        raise err(f"merged signature puts required parameter '{bad}' after a default")
    kwonly = [*cp.kwonly_params, *(p for p in pp.kwonly_params if p.name.value not in own)]
    star_arg = cp.star_arg if isinstance(cp.star_arg, cst.Param) else pp.star_arg
    if isinstance(star_arg, cst.ParamStar) and not kwonly:
        star_arg = cst.MaybeSentinel.DEFAULT
    params = [p.with_changes(comma=cst.MaybeSentinel.DEFAULT) for p in params]
    kwonly = [p.with_changes(comma=cst.MaybeSentinel.DEFAULT) for p in kwonly]
    return cp.with_changes(params=params, kwonly_params=kwonly, star_arg=star_arg, star_kwarg=pp.star_kwarg)
