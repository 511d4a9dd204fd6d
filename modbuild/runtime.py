"""Runtime oracle: load a modular file with the meaning the converter gives it, without transforming source.

Each parent's generated file runs *unmodified* in a scratch namespace. Its classes and functions are then
cloned into one module namespace G under renamed names (`naming.Renamer`): a function clone gets a code
object whose global/attribute names, local names and string constants are renamed, and G as its globals;
a class clone is rebuilt from cloned members. The child's own code then runs in G: its imports of parent
symbols bind the renamed clones, and every definition it makes replaces the same-named clone everywhere
(G bindings, clone bases, class attributes), so the inherited `Qwen2DecoderLayer` builds the child's
`Qwen2Attention`. The converter reaches the same meaning by rewriting source; agreement between the two
is the evidence.
"""

from __future__ import annotations
import __future__

import ast
import builtins
import dataclasses
import dis
import functools
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modbuild.layout import Layout, SourceDecodeError, read_source
from modbuild.naming import Prefix, PrefixError, Renamer, infer_prefixes
from modbuild.runtime_fold import FOLD, fold_class, recompile_init, replace_assignments
from modbuild.runtime_names import preferred_parents

__all__ = ["ModularError", "load_modular"]

GENERATED = "generated"
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_CONTAINERS = (list, tuple, set, frozenset)
_SKIP_CLASS_KEYS = {"__dict__", "__weakref__", "_abc_impl", "__abstractmethods__"}
_DATACLASS_KEYS = {"__dataclass_fields__", "__dataclass_params__", "__match_args__"}
_DATACLASS_PARAMS = ("init", "repr", "eq", "order", "unsafe_hash", "frozen")


class ModularError(ImportError, ValueError):
    """A problem in a modular or parent file; the message starts with `path:line:`."""

    def __init__(self, path: Path | str, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line = Path(path), line


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _parse(path: Path) -> ast.Module:
    try:
        return ast.parse(read_source(path), filename=str(path))
    except SourceDecodeError as exc:
        raise ModularError(path, exc.line, exc.message) from None
    except SyntaxError as exc:
        raise ModularError(path, exc.lineno or 1, f"syntax error: {exc.msg}") from None


# ---------------------------------------------------------------- the child's imports of parent code


@dataclass
class _Import:
    """One child import of another model's generated code (or of its own model's sibling modular file)."""

    line: int
    model: str
    stem: str | None  # the file imported from; None when the imported names are modules (`import ... as m`)
    names: list[tuple[str, str]]  # (name in that module, or a module stem; bound alias)


def _import_target(node: ast.stmt, model: str, layout: Layout) -> list[str] | None:
    """[model, stem] or [model] for an import of generated code; None for ordinary imports. Which imports
    name another model is the converter's rule (`Layout.target`); level 1 is this model's own modular file."""
    if isinstance(node, ast.ImportFrom):
        if node.level == 1:
            return [model, *(node.module.split(".") if node.module else [])]
        found = layout.target(node.module, node.level, model)
        return None if found is None else [found.model, *([found.stem] if found.stem else [])]
    dotted = [alias.name.split(".") for alias in node.names]
    return dotted[0][1:] if any(d[0] == GENERATED for d in dotted) else None


def _child_imports(tree: ast.Module, path: Path, model: str, layout: Layout) -> dict[int, list[_Import]]:
    """Imports of generated code, keyed by index of the top-level statement."""
    found: dict[int, list[_Import]] = {}
    top = {id(stmt): i for i, stmt in enumerate(tree.body)}
    for node in ast.walk(tree):
        if (
            not isinstance(node, (ast.Import, ast.ImportFrom))
            or (target := _import_target(node, model, layout)) is None
        ):
            continue
        if id(node) not in top:
            raise ModularError(path, node.lineno, "imports of generated models must be at module level")
        if isinstance(node, ast.Import):
            imports = [_module_import(alias, path, node.lineno) for alias in node.names]
        elif len(target) in (1, 2) and all(target) and node.names[0].name != "*":
            names = [(alias.name, alias.asname or alias.name) for alias in node.names]
            imports = [_Import(node.lineno, target[0], target[1] if len(target) == 2 else None, names)]
        else:
            raise ModularError(path, node.lineno, "unsupported import of generated code")
        found[top[id(node)]] = imports
    return found


def _module_import(alias: ast.alias, path: Path, line: int) -> _Import:
    parts = alias.name.split(".")
    if len(parts) != 3 or parts[0] != GENERATED or not alias.asname:
        raise ModularError(path, line, f"use 'import {GENERATED}.<model>.<module> as name', not '{alias.name}'")
    return _Import(line, parts[1], None, [(parts[2], alias.asname)])


def _class_pairs(tree: ast.Module, imports: list[_Import]) -> dict[str, list[tuple[str, str]]]:
    """Per parent model, the (child class, parent class) name pairs of `class Qwen2MLP(LlamaMLP)`."""
    origin = {alias: (imp.model, name if imp.stem else None) for imp in imports for name, alias in imp.names}
    pairs: dict[str, list[tuple[str, str]]] = {imp.model: [] for imp in imports}
    for node in tree.body:
        for base in node.bases if isinstance(node, ast.ClassDef) else ():
            if isinstance(base, ast.Name) and origin.get(base.id, (None, None))[1]:
                parent, name = origin[base.id]
            elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name):
                parent, module = origin.get(base.value.id, (None, ""))
                name = base.attr if module is None else ""  # only `modeling_llama.LlamaMLP`
            else:
                continue
            if parent in pairs and name:
                pairs[parent].append((node.name, name))
    return pairs


def _renamers(tree: ast.Module, imports: list[_Import], model: str, path: Path) -> dict[str, Renamer]:
    """One Renamer per parent model, its prefixes inferred from `class Qwen2MLP(LlamaMLP)` pairs."""
    parents = [imp for imp in imports if imp.model != model]
    try:
        child, camels = infer_prefixes(_class_pairs(tree, parents), model)
    except PrefixError as exc:
        raise ModularError(path, 1, str(exc)) from None
    new = Prefix.from_model(model, child)
    return {parent: Renamer(Prefix.from_model(parent, camel), new) for parent, camel in camels.items()}


# ---------------------------------------------------------------- parents, run unmodified in scratch namespaces


@dataclass(eq=False)
class _Scratch:
    """One parent generated file, executed as written."""

    model: str
    stem: str
    module: types.ModuleType
    renamer: Renamer
    keep: frozenset[str]  # import-bound names: never renamed
    sibling: frozenset[str]  # names imported from the same model's other files (`from .configuration_llama`)
    tree: ast.Module | None = None  # its source, for the dialect's in-place replacement (runtime_fold)

    def class_node(self, name: str) -> ast.ClassDef | None:
        body = self.tree.body if self.tree is not None else []
        return next((n for n in body if isinstance(n, ast.ClassDef) and n.name == name), None)

    @property
    def ns(self) -> dict[str, Any]:
        return self.module.__dict__

    def gname(self, name: str) -> str:
        """The name a parent's top-level name has in G."""
        return name if name in self.keep else self.renamer.identifier(name)


def _module_level(nodes: list[ast.AST]):
    """Module-level statements, including those inside try/except, if and with blocks."""
    for node in nodes:
        if isinstance(node, _DEFS):
            continue
        yield node
        for name in ("body", "orelse", "finalbody", "handlers"):
            yield from _module_level(getattr(node, name, []))


def _import_bound(tree: ast.Module) -> tuple[frozenset[str], frozenset[str]]:
    """(names bound by ordinary imports, names bound by sibling imports) at module level."""
    keep, sibling = set(), set()
    for node in _module_level(tree.body):
        if isinstance(node, ast.Import):
            keep.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names = {alias.asname or alias.name for alias in node.names}
            (sibling if node.level == 1 and node.module else keep).update(names)
    return frozenset(keep), frozenset(sibling)


class _Overlay(dict):
    """Globals for methods that name their own class (`super(LlamaAttention, self)`).

    The renamed class name means the clone that owns the method, never the child class that later takes
    that name in G (which would make the two-argument super() recurse). Every other lookup reads G live.
    """

    def __init__(self, base: dict[str, Any]):
        super().__init__(__builtins__=base["__builtins__"], __name__=base["__name__"])
        self.base = base

    def __missing__(self, key: str) -> Any:
        return self.base[key]


class _Removed:
    """An attribute the child removed (`attr = AttributeError()`, a method raising AttributeError)."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:  # non-data: instance attributes still win
        raise AttributeError(f"{self.name!r} was removed by the modular file")


class _InProgress(Exception):
    """A class attribute refers to a class whose clone is still being built; set it afterwards."""


class _ModuleProxy:
    """`from generated.llama import modeling_llama`: attribute access reads the renamed entry of G."""

    def __init__(self, scratch: _Scratch, namespace: dict[str, Any]):
        self._scratch, self._ns = scratch, namespace

    def __getattr__(self, name: str) -> Any:
        if name not in self._scratch.ns or _dunder(name):
            raise AttributeError(f"module {self._scratch.module.__name__!r} has no attribute {name!r}")
        return self._ns[self._scratch.gname(name)]


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _rename_const(value: Any, renamer: Renamer) -> Any:
    if isinstance(value, str):
        return renamer.string(value)
    if type(value) in (tuple, frozenset):
        return type(value)(_rename_const(v, renamer) for v in value)
    return value


def _rename_code(code: types.CodeType, scratch: _Scratch) -> types.CodeType:
    """The same bytecode with renamed names and string constants (nested code objects too)."""
    ident = scratch.renamer.identifier
    imported = {i.argval for i in dis.get_instructions(code) if i.opname in ("IMPORT_NAME", "IMPORT_FROM")}
    keep = scratch.keep | imported  # module paths and imported names are not the model's to rename
    local = code.co_varnames + code.co_cellvars + code.co_freevars
    # Locals are renamed (keyword-argument names must match the renamed call sites) unless that would merge two.
    loc = ident if len({ident(n) for n in set(local)}) == len(set(local)) else str
    consts = tuple(
        _rename_code(c, scratch) if isinstance(c, types.CodeType) else _rename_const(c, scratch.renamer)
        for c in code.co_consts
    )
    return code.replace(
        co_names=tuple(n if n in keep else ident(n) for n in code.co_names),
        co_consts=consts,
        co_varnames=tuple(map(loc, code.co_varnames)),
        co_cellvars=tuple(map(loc, code.co_cellvars)),
        co_freevars=tuple(map(loc, code.co_freevars)),
        co_name=ident(code.co_name),
        co_qualname=ident(code.co_qualname),
    )


def _swap(obj: Any, repl: dict[int, Any]) -> Any:
    """`obj` with replaced objects substituted, also inside plain containers (new container only if changed)."""
    if id(obj) in repl:
        return repl[id(obj)]
    if type(obj) in _CONTAINERS:
        items = [_swap(v, repl) for v in obj]
        return obj if all(a is b for a, b in zip(items, obj)) else type(obj)(items)
    if type(obj) is dict:
        items = [(_swap(k, repl), _swap(v, repl)) for k, v in obj.items()]
        return obj if all(a is k and b is v for (a, b), (k, v) in zip(items, obj.items())) else dict(items)
    return obj


def _contents(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


def _member_names(value: Any) -> set[str]:
    """Names the code of a class member uses (functions inside classmethod/staticmethod/property too)."""
    if isinstance(value, (staticmethod, classmethod)):
        funcs = [value.__func__]
    elif isinstance(value, property):
        funcs = [value.fget, value.fset, value.fdel]
    else:
        funcs = [value]
    return set().union(*(_code_names(f.__code__) for f in funcs if isinstance(f, types.FunctionType)))


def _generated_by_dataclass(cls: type, value: Any) -> bool:
    """`__init__`, `__repr__`, `__eq__`... written by @dataclass (from a string): regenerated on the clone."""
    is_dataclass = "__dataclass_params__" in cls.__dict__
    return is_dataclass and isinstance(value, types.FunctionType) and value.__code__.co_filename == "<string>"


def _is_attribute_error(node: ast.AST | None) -> bool:
    node = node.func if isinstance(node, ast.Call) else node
    return isinstance(node, ast.Name) and node.id == "AttributeError"


def _removed_names(node: ast.ClassDef) -> list[str]:
    """Members the child removes: `attr = AttributeError()` and methods that only raise AttributeError."""
    names = []
    for item in node.body:
        if isinstance(item, ast.Assign) and _is_attribute_error(item.value):
            names += [target.id for target in item.targets if isinstance(target, ast.Name)]
        elif isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = item.body[1:] if ast.get_docstring(item, clean=False) is not None else item.body
            if len(body) == 1 and isinstance(body[0], ast.Raise) and _is_attribute_error(body[0].exc):
                names.append(item.name)
    return names


def _future_flags(tree: ast.Module) -> int:
    flags = 0
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            for alias in node.names:
                flags |= getattr(__future__, alias.name).compiler_flag
    return flags


# ---------------------------------------------------------------- cloning parents into G, then running the child


class _Loader:
    """One load: the parents' scratch modules, their clones in G, and the child's run in G."""

    def __init__(self, module: types.ModuleType, path: Path, root: Path, renamers: dict[str, Renamer]):
        self.G = module.__dict__
        self.path, self.root, self.model, self.renamers = path, root, path.parent.name, renamers
        self.scratch: dict[tuple[str, str], _Scratch] = {}
        self.by_ns: dict[int, _Scratch] = {}  # id(scratch namespace) -> scratch
        self.classes: dict[int, tuple[type, _Scratch]] = {}  # every class parent code created
        self.memo: dict[int, tuple[Any, Any]] = {}  # id(original) -> (original, clone)
        self.building: dict[int, list[types.CellType]] = {}  # class being cloned -> its `__class__` cells
        self.clones: list[type] = []
        self.current: dict[str, list[Any]] = {}  # G name -> parent objects under it, G's first (later: the child's)
        self.builtins = dict(vars(builtins), __import__=self._import, __build_class__=self._build_class)
        self.pinned: set[str] = set()  # parent aliases the child calls explicitly: never replaced by the child
        self.origins: dict[str, tuple[_Scratch, str]] = {}  # child alias -> (parent file, name there)
        self.G[FOLD] = replace_assignments
        self.prefer: dict[str, str] = {}  # renamed name -> the parent it comes from, where not the first

    # -- parents, executed unmodified

    def parent(self, model: str, stem: str) -> _Scratch | None:
        if (model, stem) in self.scratch:
            return self.scratch[(model, stem)]
        path = self.root / GENERATED / model / f"{stem}.py"
        if not path.is_file():
            return None
        tree = _parse(path)
        module = types.ModuleType(f"{GENERATED}.{model}.{stem}")
        module.__dict__.update(__file__=str(path), __package__=f"{GENERATED}.{model}", __builtins__=self.builtins)
        scratch = _Scratch(model, stem, module, self.renamers[model], *_import_bound(tree), tree)
        self.scratch[(model, stem)] = scratch
        self.by_ns[id(scratch.ns)] = scratch
        exec(compile(tree, str(path), "exec", dont_inherit=True), scratch.ns)  # noqa: S102 (the parent, as written)
        return scratch

    def _import(self, name: str, globals=None, locals=None, fromlist=(), level: int = 0) -> Any:
        """Parent code's `from .configuration_llama import X` runs that sibling file as a parent too."""
        scratch = self.by_ns.get(id(globals))
        sibling = self.parent(scratch.model, name) if scratch and level == 1 and name and fromlist else None
        if sibling is not None:
            return sibling.module
        return builtins.__import__(name, globals, locals, fromlist, level)

    def _build_class(self, func, name, *bases, **kwargs) -> Any:
        cls = builtins.__build_class__(func, name, *bases, **kwargs)
        if isinstance(cls, type) and (scratch := self.by_ns.get(id(func.__globals__))) is not None:
            self.classes[id(cls)] = (cls, scratch)
        return cls

    def load_parents(self, imports: list[_Import], tree: ast.Module) -> None:
        for imp in imports:
            if imp.model == self.model:
                continue
            for stem in [imp.stem] if imp.stem else [name for name, _ in imp.names]:
                if (scratch := self.parent(imp.model, stem)) is None:
                    where = self.root / GENERATED / imp.model / f"{stem}.py"
                    raise ModularError(
                        self.path, imp.line, f"no generated module {where} (convert '{imp.model}' first)"
                    )
            for name, _ in imp.names if imp.stem else ():
                if name not in scratch.ns or _dunder(name):
                    dotted = f"{GENERATED}.{imp.model}.{imp.stem}"
                    raise ModularError(self.path, imp.line, f"cannot import name {name!r} from {dotted}")
        self.origins = {
            alias: (self.scratch[(imp.model, imp.stem)], name)
            for imp in imports
            if imp.stem and imp.model != self.model
            for name, alias in imp.names
        }
        self.reorder_inits(tree)
        order = list(dict.fromkeys(imp.model for imp in imports if imp.model != self.model))
        scratches = [s for s in self.scratch.values() if s.tree is not None]
        self.prefer = preferred_parents(tree, self.origins, scratches, order, lambda s, n: s.gname(n))
        self._populate(order)

    def _populate(self, models: list[str]) -> None:
        """Every parent's top-level names go into G, renamed; the first parent to provide a name wins, unless
        `runtime_names` prefers another (the one parent whose code uses it)."""

        def rank(s: _Scratch) -> tuple:  # parent order, then modeling before configuration (as the converter)
            return models.index(s.model), s.stem != f"modeling_{s.model}", s.stem != f"configuration_{s.model}"

        placed: set[str] = set()  # preferred names already taken from their parent
        for scratch in sorted(self.scratch.values(), key=rank):
            for name, value in list(scratch.ns.items()):
                gname = scratch.gname(name)
                preferred = self.prefer.get(gname)
                if _dunder(name) or name in scratch.sibling or preferred not in (None, scratch.model):
                    continue
                if gname in self.G and (preferred is None or gname in placed):
                    continue
                if preferred is not None:
                    placed.add(gname)
                keep = name in scratch.keep and self._owner(value) is None  # imported objects stay as they are
                clone = self.G[gname] = value if keep else self.value(value, scratch)
                if clone is not value and isinstance(clone, (type, types.FunctionType)):
                    self.current[gname] = [clone]

    # -- cloning

    def _owner(self, obj: Any, depth: int = 3) -> _Scratch | None:
        """The parent file whose code defined `obj` (a decorator's wrapper counts via its closure)."""
        if isinstance(obj, types.FunctionType):
            if (scratch := self.by_ns.get(id(obj.__globals__))) is not None or depth == 0:
                return scratch
            cells = obj.__closure__ or ()
            return next(filter(None, (self._owner(_contents(c), depth - 1) for c in cells)), None)
        hit = self.classes.get(id(obj))
        return hit[1] if hit is not None and hit[0] is obj else None

    def value(self, obj: Any, scratch: _Scratch, globals: dict | None = None) -> Any:
        """The clone of a parent object: code re-created under renamed names, strings and containers renamed."""
        hit = self.memo.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        if id(obj) in self.building:
            raise _InProgress
        if isinstance(obj, str):
            return scratch.renamer.string(obj)
        if isinstance(obj, types.FunctionType):
            new = self._function(obj, globals)
        elif isinstance(obj, type):
            new = self._class(obj) if self._owner(obj) else obj
        elif isinstance(obj, (staticmethod, classmethod)):
            new = type(obj)(self.value(obj.__func__, scratch, globals))
        elif isinstance(obj, property):
            funcs = (self.value(f, scratch, globals) for f in (obj.fget, obj.fset, obj.fdel))
            new = type(obj)(*funcs, obj.__doc__)
        elif isinstance(obj, functools.cached_property):
            new = type(obj)(self.value(obj.func, scratch, globals))
        elif type(obj) in _CONTAINERS:
            new = type(obj)(self.value(v, scratch) for v in obj)
        elif type(obj) is dict:
            new = {self.value(k, scratch): self.value(v, scratch) for k, v in obj.items()}
        else:
            return obj
        self.memo[id(obj)] = (obj, new)
        return new

    def _function(self, fn: types.FunctionType, globals: dict | None) -> types.FunctionType:
        scratch = self.by_ns.get(id(fn.__globals__))
        if scratch is None:  # a decorator's wrapper: its own code, with the parent function inside cloned
            scratch = self._owner(fn)
            if scratch is None:
                return fn
            new = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, self._closure(fn))
            new.__qualname__ = scratch.renamer.identifier(fn.__qualname__)
        else:
            code = _rename_code(fn.__code__, scratch)
            defaults = self.value(fn.__defaults__, scratch)
            globals = self.G if globals is None else globals
            new = types.FunctionType(code, globals, code.co_name, defaults, self._closure(fn))
        new.__kwdefaults__ = self.value(fn.__kwdefaults__, scratch)
        new.__annotations__ = self.value(fn.__annotations__, scratch)
        new.__dict__.update(self.value(fn.__dict__, scratch))
        new.__doc__, new.__module__ = fn.__doc__, self.G["__name__"]
        return new

    def _closure(self, fn: types.FunctionType) -> tuple[types.CellType, ...] | None:
        if fn.__closure__ is None:
            return None
        scratch = self._owner(fn)
        cells = []
        for cell in fn.__closure__:
            try:
                content = cell.cell_contents
            except ValueError:
                cells.append(types.CellType())
                continue
            if id(content) in self.building:  # `__class__` of the class being cloned: filled once it exists
                cells.append(types.CellType())
                self.building[id(content)].append(cells[-1])
            else:
                cells.append(types.CellType(self.value(content, scratch)))
        return tuple(cells)

    def _class(self, cls: type) -> type:
        scratch = self._owner(cls)
        name = scratch.renamer.identifier(cls.__name__)
        cells = self.building[id(cls)] = []
        mark, overlay = len(self.memo), _Overlay(self.G)
        try:
            bases = tuple(self.value(base, scratch) for base in cls.__bases__)
            namespace, late = self._members(cls, scratch, overlay)
            namespace.update(__module__=self.G["__name__"], __qualname__=scratch.renamer.identifier(cls.__qualname__))
            new = self.value(type(cls), scratch)(name, bases, namespace)
        except _InProgress:  # a class attribute needs a class whose clone is unfinished: forget this attempt
            for key in list(self.memo)[mark:]:
                del self.memo[key]
            raise
        finally:
            del self.building[id(cls)]
        for cell in cells:
            cell.cell_contents = new
        overlay[name] = new
        self.memo[id(cls)] = (cls, new)
        self.clones.append(new)
        for key, value in late.items():
            setattr(new, key, self.value(value, scratch))
        if (params := cls.__dict__.get("__dataclass_params__")) is not None:  # regenerate __init__ etc. renamed
            new = dataclasses.dataclass(new, **{name: getattr(params, name) for name in _DATACLASS_PARAMS})
        return new

    def _members(self, cls: type, scratch: _Scratch, overlay: _Overlay) -> tuple[dict, dict]:
        """The clone's class namespace, and the attributes that can only be set once the clone exists."""
        namespace, late = {}, {}
        skip = _SKIP_CLASS_KEYS | (_DATACLASS_KEYS if "__dataclass_params__" in cls.__dict__ else set())
        for key, value in cls.__dict__.items():
            if key in skip or isinstance(value, types.MemberDescriptorType) or _generated_by_dataclass(cls, value):
                continue
            key = key if _dunder(key) else scratch.renamer.identifier(key)
            uses = _member_names(value)
            globals = overlay if cls.__name__ in uses and "super" in uses else None
            try:
                namespace[key] = self.value(value, scratch, globals)
            except _InProgress:
                late[key] = value
        return namespace, late

    # -- the child

    def run_child(self, tree: ast.Module, imports: dict[int, list[_Import]]) -> None:
        """Run the child's statements in G one by one; after each, its definitions replace the clones."""
        flags = _future_flags(tree)
        stands_for = self._aliases(tree)
        for index, stmt in enumerate(tree.body):
            if index in imports:
                for imp in imports[index]:
                    self._bind(imp)
            else:
                if isinstance(stmt, ast.ClassDef):
                    stmt = fold_class(stmt, *self._parent_class_node(stmt))
                module = ast.Module(body=[stmt], type_ignores=[])
                code = compile(module, str(self.path), "exec", flags=flags, dont_inherit=True)
                exec(code, self.G)  # noqa: S102 (the child's own statement)
                if isinstance(stmt, ast.ClassDef) and stmt.name in stands_for:
                    self.G[stands_for[stmt.name]] = self.G[stmt.name]
            self._child_won()
            if isinstance(stmt, ast.ClassDef) and isinstance(cls := self.G.get(stmt.name), type):
                for name in _removed_names(stmt):
                    if any(hasattr(base, name) for base in cls.__bases__):  # else: a new member, kept as written
                        setattr(cls, name, _Removed(name))

    def _aliases(self, tree: ast.Module) -> dict[str, str]:
        """Child class -> the renamed parent class it stands for everywhere: it flattens that parent class under
        another name, is the only child class to flatten it, and the child defines no class of that name (the
        converter's rule, `collect.Namespace._aliases`)."""
        defined = {n.name for n in tree.body if isinstance(n, _DEFS)}
        by_base: dict[str, list[str]] = {}
        for node in tree.body:
            base = next(
                (b.id for b in getattr(node, "bases", ()) if isinstance(b, ast.Name) and b.id in self.origins), None
            )
            if isinstance(node, ast.ClassDef) and base is not None:
                scratch, name = self.origins[base]
                by_base.setdefault(scratch.gname(name), []).append(node.name)
        return {
            names[0]: renamed
            for renamed, names in by_base.items()
            if len(names) == 1 and names[0] != renamed and renamed not in defined
        }

    def _parent_class_node(self, node: ast.ClassDef) -> tuple[ast.ClassDef | None, str]:
        """The source of the parent class a child class flattens (its first base imported from a parent), and
        its file."""
        for base in node.bases:
            if isinstance(base, ast.Name) and base.id in self.origins:
                scratch, name = self.origins[base.id]
                return scratch.class_node(name), scratch.module.__file__
            if isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name):
                proxy = self.G.get(base.value.id)
                if isinstance(proxy, _ModuleProxy):
                    return proxy._scratch.class_node(base.attr), proxy._scratch.module.__file__
        return None, ""

    def reorder_inits(self, tree: ast.Module) -> None:
        """A child `__init__` that calls `super().__init__` flattens its parent's, whose own base-class call runs
        first there (`runtime_fold.init_call_first`): give the parent class that `__init__` before cloning."""
        for node in tree.body:
            if not isinstance(node, ast.ClassDef) or not _calls_super_init(node):
                continue
            base = next((b.id for b in node.bases if isinstance(b, ast.Name) and b.id in self.origins), None)
            if base is None:
                continue
            scratch, name = self.origins[base]
            cls, parent = scratch.ns.get(name), scratch.class_node(name)
            if isinstance(cls, type) and parent is not None:
                recompile_init(cls, parent, scratch.ns, scratch.module.__file__)

    def _bind(self, imp: _Import) -> None:
        """A parent import binds the clone of that parent's symbol (a module import binds a proxy reading G).

        The clone is the named parent's even where an earlier parent's same-named clone holds G (as in the
        converter, an explicit import says which definition the child builds on).
        """
        if imp.model == self.model:
            return self._bind_own(imp)
        for name, alias in imp.names:
            if imp.stem is None:
                self.G[alias] = _ModuleProxy(self.scratch[(imp.model, name)], self.G)
                continue
            scratch = self.scratch[(imp.model, imp.stem)]
            gname, value = scratch.gname(name), scratch.ns[name]
            plain = name in scratch.sibling or (name in scratch.keep and self._owner(value) is None)
            self.G[alias] = obj = self.G[gname] if plain else self.value(value, scratch)
            if alias in self.pinned:
                continue  # `LlamaAttention.forward(self, ...)`: the alias keeps meaning the parent's class
            if gname in self.current and all(obj is not o for o in self.current[gname]):
                self.current[gname].append(obj)  # replaced by the child's definition like G's own
            if gname in self.G and not plain:
                self.G[gname] = obj  # an explicit import wins over an earlier parent's same-named definition

    def _bind_own(self, imp: _Import) -> None:
        """`from .configuration_qwen2 import Qwen2Config`: the meaning of this model's other modular file."""
        stem = (imp.stem or "").replace("modeling_", "modular_", 1)
        source = self.path.parent / f"{stem}.py"
        if not imp.stem or source == self.path or not source.is_file():
            raise ModularError(self.path, imp.line, f"no modular file {source} for this import of model {imp.model!r}")
        module = load_modular(source, self.root)
        for name, alias in imp.names:
            if not hasattr(module, name):
                raise ModularError(self.path, imp.line, f"cannot import name {name!r} from {source}")
            self.G[alias] = getattr(module, name)

    def _child_won(self) -> None:
        """A name the child (re)bound replaces the parent's object everywhere it is referenced."""
        replaced = {}
        for gname, olds in self.current.items():
            new = self.G.get(gname, olds[0])
            if new is not olds[0]:
                for old in olds:
                    replaced[id(old)] = new
                    self._rebase(old, new)
                self.current[gname] = [new]
        if not replaced:
            return
        for key, value in list(self.G.items()):
            if key in self.pinned:
                continue
            if (swapped := _swap(value, replaced)) is not value:
                self.G[key] = swapped
        for clone in self.clones:
            for key, value in list(vars(clone).items()):
                if (swapped := _swap(value, replaced)) is not value:
                    setattr(clone, key, swapped)

    def _rebase(self, old: Any, new: Any) -> None:
        """Clones that subclassed `old` subclass the child's class instead (`Qwen2Model(Qwen2PreTrainedModel)`)."""
        if not (isinstance(old, type) and isinstance(new, type)):
            return
        for clone in self.clones:
            if old in clone.__bases__ and not issubclass(new, clone):
                clone.__bases__ = tuple(new if base is old else base for base in clone.__bases__)


def _calls_super_init(node: ast.ClassDef) -> bool:
    init = next((s for s in node.body if isinstance(s, ast.FunctionDef) and s.name == "__init__"), None)
    return init is not None and any(
        isinstance(s, (ast.Expr, ast.Assign))
        and isinstance(s.value, ast.Call)
        and isinstance(s.value.func, ast.Attribute)
        and s.value.func.attr == "__init__"
        and isinstance(s.value.func.value, ast.Call)
        and isinstance(s.value.func.value.func, ast.Name)
        and s.value.func.value.func.id == "super"
        for s in init.body
    )


def explicit_parent_calls(tree: ast.Module, parent_names: set[str]) -> set[str]:
    """Parent classes a child class calls explicitly, `LlamaAttention.forward(self, ...)`: the escape hatch
    that keeps the parent class itself (the converter keeps it too, under its own name)."""
    found = set()
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = {b.id for b in node.bases if isinstance(b, ast.Name) and b.id in parent_names}
        for call in ast.walk(node):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and isinstance(call.func.value, ast.Name)
                and call.func.value.id in bases
                and call.args
                and isinstance(call.args[0], ast.Name)
                and call.args[0].id == "self"
            ):
                found.add(call.func.value.id)
    return found


def load_modular(path: str | Path, root: Path | None = None) -> types.ModuleType:
    """Load a modular file with its flattened meaning, as a module (the runtime oracle for the converter).

    `root` holds `modular/` and `generated/` (default: three levels above `path`). Parents are read from
    `root/generated/<parent>/<module>.py`. Raises ModularError (`path:line: ...`) for a syntax error, a missing
    parent module or a missing parent symbol.
    """
    path = Path(path).resolve()
    root = Path(root).resolve() if root is not None else path.parents[2]
    tree = _parse(path)
    by_stmt = _child_imports(tree, path, path.parent.name, Layout(root / "modular", root / GENERATED))
    imports = [imp for index in sorted(by_stmt) for imp in by_stmt[index]]
    module = types.ModuleType(path.stem)
    module.__dict__.update(__file__=str(path), __builtins__=builtins)
    loader = _Loader(module, path, root, _renamers(tree, imports, path.parent.name, path))
    loader.pinned = explicit_parent_calls(tree, {alias for imp in imports for _, alias in imp.names})
    loader.load_parents(imports, tree)
    loader.run_child(tree, by_stmt)
    module.__dict__.setdefault("__all__", [node.name for node in tree.body if isinstance(node, _DEFS)])
    return module
