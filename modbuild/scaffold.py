"""`modbuild new <m> --from <parent>`: a new model that starts as its parent under a new name.

Writes `modular/<m>/modular_<m>.py` (the config, model and causal-LM classes subclassing the parent's)
and `modular/<m>/model.toml` (the parent's verification spec: until the model differs from its parent,
the parent's references are its references), in the manner of HF's `add-new-model-like`. Then
`doit convert:<m> verify --model <m>` builds and checks it; nothing in modbuild/ changes.
"""

from __future__ import annotations

import ast
import keyword
import re
from pathlib import Path

from modbuild.atomic import atomic_write
from modbuild.verify.specs import default_prefix

MODULAR = '''\
"""{camel}: so far {parent_camel} under a new name. Override what differs (see docs/modular.md)."""

from generated.{parent}.configuration_{parent} import {parent_camel}Config
from generated.{parent}.modeling_{parent} import {parent_camel}ForCausalLM, {parent_camel}Model


class {camel}Config({parent_camel}Config):
    model_type = "{model}"


class {camel}Model({parent_camel}Model):
    pass


class {camel}ForCausalLM({parent_camel}ForCausalLM):
    pass
'''


class ScaffoldError(ValueError):
    """Why a model cannot be scaffolded; the message names the path at fault."""


def causal_lm_classes(modeling: Path) -> list[str]:
    """The `*ForCausalLM` classes a generated modeling file defines."""
    tree = ast.parse(modeling.read_text(), str(modeling))
    return [n.name for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("ForCausalLM")]


def class_prefix(modeling: Path) -> str:
    """`Qwen2` from the one `Qwen2ForCausalLM` class a generated modeling file defines."""
    names = causal_lm_classes(modeling)
    if len(names) != 1:
        raise ScaffoldError(f"{modeling}: expected one *ForCausalLM class to build on, found {len(names)}")
    return names[0].removesuffix("ForCausalLM")


def possible_parents(root: Path) -> list[str]:
    """The models of `root` that `modbuild new` can build on: converted causal LMs with a spec."""
    found = []
    for directory in sorted(p for p in (root / "modular").glob("*") if p.is_dir()):
        model = directory.name
        modeling = root / "generated" / model / f"modeling_{model}.py"
        inputs = [directory / f"modular_{model}.py", directory / "model.toml", modeling]
        try:
            if all(path.is_file() for path in inputs) and len(causal_lm_classes(modeling)) == 1:
                found.append(model)
        except (SyntaxError, ValueError):  # a broken generated file (`doit check` names it): not a parent
            continue
    return found


def check_name(model: str) -> None:
    """A model name is a package name in generated/ and the stem of its files: say what is wrong with it."""
    if bad := sorted(set(re.sub(r"[a-z0-9_]", "", model))):
        shown = ", ".join(repr(c) for c in bad)
        raise ScaffoldError(f"'{model}': a model name is lower case letters, digits and underscores, not {shown}")
    if not model[:1].isalpha():
        raise ScaffoldError(f"'{model}': a model name must start with a letter (it is a Python package name)")
    if keyword.iskeyword(model):
        raise ScaffoldError(
            f"'{model}': a Python keyword cannot be a model name (`import generated.{model}` would not parse)"
        )


def _choices(root: Path) -> str:
    return f"the models that can be parents: {', '.join(possible_parents(root)) or 'none'}"


def check_parent(root: Path, parent: str) -> tuple[Path, Path]:
    """The parent's generated modeling file and spec; a clear error, listing the possible parents, if it has none."""
    parent_modular = root / "modular" / parent / f"modular_{parent}.py"
    parent_modeling = root / "generated" / parent / f"modeling_{parent}.py"
    parent_spec = root / "modular" / parent / "model.toml"
    if not parent_modular.is_file():
        raise ScaffoldError(f"{parent_modular}: missing, so '{parent}' cannot be a parent ({_choices(root)})")
    for path in (parent_modeling, parent_spec):
        if not path.is_file():
            hint = " (run `doit convert` first)" if path == parent_modeling else ""
            raise ScaffoldError(f"{path}: missing, so '{parent}' cannot be a parent{hint}")
    if not causal_lm_classes(parent_modeling):
        raise ScaffoldError(
            f"{parent_modeling}: '{parent}' is not a causal LM (it defines no *ForCausalLM class); only causal LMs "
            f"can be scaffolded ({_choices(root)})"
        )
    return parent_modeling, parent_spec


def spec_text(parent_spec: Path, model: str, camel: str, parent: str) -> str:
    """The parent's model.toml, headed for the new model, with the new class prefix where it is not the default."""
    lines = [
        f"# How `doit verify` checks {camel} (format: docs/verify.md). Scaffolded from {parent}'s spec: until",
        f"# {camel} differs from {parent}, {parent}'s references (HF, PaddleNLP) are its references.",
    ]
    body, table = [], ""
    for line in parent_spec.read_text().splitlines():
        if header := re.match(r"\s*\[([^\]]+)\]", line):
            table = header.group(1).strip()
        # the parent's real checkpoint is the parent's: it is fetched and checked under the parent's name
        if table != "verify.real" and not re.match(r"\s*prefix\s*=", line):
            body.append(line)
    while body and body[0].startswith("#"):
        body.pop(0)  # the parent's own heading
    for line in body:
        lines.append(line)
        if line.strip() == "[verify]" and camel != default_prefix(model):
            lines.append(f'prefix = "{camel}"  # the class names: {camel}ForCausalLM, {camel}Config')
    return "\n".join(lines).rstrip() + "\n"


def scaffold(root: Path, model: str, parent: str, camel: str | None = None) -> list[Path]:
    """Write the new model's modular file and spec under `root/modular/<model>/`; returns the files written."""
    root = Path(root)
    check_name(model)
    directory = root / "modular" / model
    if directory.exists():
        raise ScaffoldError(f"{directory}: already exists")
    parent_modeling, parent_spec = check_parent(root, parent)
    camel = camel or default_prefix(model)
    if not camel.isidentifier() or not camel[:1].isupper():
        raise ScaffoldError(f"'{camel}': a class prefix is a capitalised identifier")
    parent_camel = class_prefix(parent_modeling)
    if camel == parent_camel:
        raise ScaffoldError(
            f"'{camel}': the class prefix is {parent}'s own (class {camel}Config({parent_camel}Config) would subclass "
            f"itself); give {model} another one with --prefix"
        )
    outputs = {
        directory / f"modular_{model}.py": MODULAR.format(
            camel=camel, model=model, parent=parent, parent_camel=parent_camel
        ),
        directory / "model.toml": spec_text(parent_spec, model, camel, parent),
    }
    for path, text in outputs.items():
        atomic_write(path, text)
    return list(outputs)
