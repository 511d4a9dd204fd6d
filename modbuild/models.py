"""Look generated models up by `model_type`, as paddlenlp's Auto classes do for their own models.

paddlenlp 3.0.0b4's `AutoConfig` has a `register` hook, which `register_configs` uses; its
`AutoModelForCausalLM` has none (only a fixed mapping inside paddlenlp), so the model lookup is here:

    from modbuild.models import from_pretrained
    model = from_pretrained("checkpoints/qwen2")      # picks Qwen2ForCausalLM from config.json; eval mode

A directory that is not a Paddle checkpoint (no or broken config.json, an HF checkpoint not yet converted) is a
`CheckpointError` naming the file, before paddlenlp is asked.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import generated

# Weight files paddlenlp's from_pretrained reads, and those only an HF (PyTorch, TF, Flax) checkpoint has.
PADDLE_SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
PADDLE_PDPARAMS = ("model_state.pdparams", "model_state.pdparams.index.json")
HF_ONLY_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
HF_FORMATS = ("pt", "tf", "flax", "mlx")  # safetensors metadata "format" of HF's writers; Paddle's is "np"


class UnknownModel(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class CheckpointError(ValueError):
    """A directory that is not a Paddle checkpoint; the message names the directory or file."""


def known_models() -> list[str]:
    root = Path(generated.__file__).parent
    return sorted(p.parent.name for p in root.glob("*/modeling_*.py") if p.stem == f"modeling_{p.parent.name}")


def model_directory(model_type: str) -> str:
    """The generated package of a config's `model_type`: the one of that name, else the one whose config class
    declares it (HF's Gemma 3 text model is `gemma3_text`, generated as `gemma3`)."""
    root = Path(generated.__file__).parent
    if (root / model_type).is_dir():
        return model_type
    declared = re.compile(rf'^\s+model_type = "{re.escape(model_type)}"$', re.MULTILINE)
    for path in sorted(root.glob("*/configuration_*.py")):
        if declared.search(path.read_text(encoding="utf-8")):
            return path.parent.name
    return model_type


def _module(model_type: str, kind: str):
    if not isinstance(model_type, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", model_type):
        raise UnknownModel(f"unknown model_type {model_type!r}; known: {', '.join(known_models())}")
    directory = model_directory(model_type)
    name = f"generated.{directory}.{kind}_{directory}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not name.startswith(exc.name):
            raise  # a missing dependency inside an existing model is not an unknown model_type
        raise UnknownModel(f"unknown model_type {model_type!r}; known: {', '.join(known_models())}") from None


def _own_classes(module, suffix: str) -> list[type]:
    return [
        obj
        for name, obj in vars(module).items()
        if isinstance(obj, type) and name.endswith(suffix) and obj.__module__ == module.__name__
    ]


def causal_lm_class(model_type: str) -> type:
    """The `*ForCausalLM` class of `generated.<model_type>.modeling_<model_type>`."""
    module = _module(model_type, "modeling")
    classes = _own_classes(module, "ForCausalLM")
    if len(classes) != 1:
        raise UnknownModel(f"{module.__name__} defines {len(classes)} *ForCausalLM classes, expected one")
    return classes[0]


def model_class(model_type: str, architectures: list[str] | None = None) -> type:
    """The generated class a checkpoint is for: the first of its config's `architectures` that the model
    defines (`BertModel`, `BertForMaskedLM`), else the model's causal LM."""
    module = _module(model_type, "modeling")
    own = {cls.__name__: cls for cls in _own_classes(module, "")}
    for name in architectures or []:
        if name in own and hasattr(own[name], "_get_name_mappings"):
            return own[name]
    if not _own_classes(module, "ForCausalLM") and architectures:
        known = sorted(n for n, c in own.items() if hasattr(c, "_get_name_mappings") and n.endswith(("Model", "LM")))
        raise UnknownModel(f"{module.__name__} defines none of {architectures} (it has {', '.join(known)})")
    return causal_lm_class(model_type)


def config_class(model_type: str) -> type:
    module = _module(model_type, "configuration")
    own = [c for c in _own_classes(module, "Config") if hasattr(c, "model_type")]
    # By its model_type, or by the directory's name when they differ (gemma3 -> gemma3_text).
    classes = [c for c in own if c.model_type == model_type] or (
        own if model_directory(model_type) == model_type else []
    )
    if len(classes) != 1:
        raise UnknownModel(f"{module.__name__} defines {len(classes)} config classes for {model_type!r}, expected one")
    return classes[0]


def read_config(directory: str | Path) -> dict:
    """A checkpoint's config.json as a dict; a missing or broken one is a CheckpointError naming it."""
    directory = Path(directory)
    path = directory / "config.json"
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such directory")
    if not path.is_file():
        raise CheckpointError(f"{directory}: no config.json: not a checkpoint directory")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable: {exc}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return config


def _first_safetensors(directory: Path) -> Path | None:
    """The single weights file, or the first shard the index names; None without either."""
    if (directory / PADDLE_SAFETENSORS[0]).is_file():
        return directory / PADDLE_SAFETENSORS[0]
    index = directory / PADDLE_SAFETENSORS[1]
    if not index.is_file():
        return None
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index}: not a safetensors index ({type(exc).__name__}: {exc})") from None
    if not shards:
        raise CheckpointError(f"{index}: its weight_map is empty")
    return directory / shards[0]


def check_paddle_weights(directory: str | Path) -> None:
    """Refuse a directory whose weights paddlenlp cannot read: none, or an HF checkpoint's (paddlenlp's own error
    for those is an OSError about "valid metadata" that does not say the checkpoint needs converting)."""
    from safetensors import SafetensorError, safe_open  # an ML install's; a core install never loads weights

    directory = Path(directory)
    convert = f"convert it first: python -m modbuild.weights hf2paddle --src {directory} --dst {directory}-paddle"
    first = _first_safetensors(directory)
    if first is not None:
        try:
            with safe_open(first, framework="np") as handle:
                fmt = (handle.metadata() or {}).get("format")
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{first}: truncated or corrupt safetensors file ({exc})") from None
        if fmt in HF_FORMATS:
            raise CheckpointError(
                f"{directory}: looks like an HF checkpoint ({first.name} holds format {fmt!r} tensors, "
                f"a Paddle checkpoint 'np'); {convert}"
            )
        return
    if any((directory / name).is_file() for name in PADDLE_PDPARAMS):
        return
    if hf := [name for name in HF_ONLY_WEIGHTS if (directory / name).is_file()]:
        raise CheckpointError(
            f"{directory}: looks like an HF checkpoint ({hf[0]}); save it as safetensors, then {convert}"
        )
    raise CheckpointError(f"{directory}: no weights ({', '.join(PADDLE_SAFETENSORS + PADDLE_PDPARAMS)})")


def checkpoint_class(path: str | Path) -> type:
    """The generated class a Paddle checkpoint directory is for; every error names the directory or file."""
    config = read_config(path)
    check_paddle_weights(path)
    try:
        return model_class(config.get("model_type"), config.get("architectures"))
    except UnknownModel as exc:
        raise UnknownModel(f"{Path(path) / 'config.json'}: {exc}") from None


def from_pretrained(path: str | Path, **kwargs):
    """Load a Paddle checkpoint directory with the generated model its config.json names, in eval mode (as HF's
    `from_pretrained` returns it: dropout off, so two calls on the same input agree).

    The parameters are created empty (paddle's `LazyGuard`, paddlenlp's `low_cpu_mem_usage`) and filled from the
    checkpoint, rather than drawn at random and then overwritten: 0.7 s instead of 12 s for Gemma 3 270M. Weights
    the checkpoint lacks are initialised as in a new model (paddlenlp warns which)."""
    return load_class(checkpoint_class(path), path, **kwargs)


def load_class(cls: type, path: str | Path, **kwargs):
    """`cls.from_pretrained(path)` without random initialisation of what the checkpoint then overwrites."""
    kwargs.setdefault("low_cpu_mem_usage", True)
    model = cls.from_pretrained(path, **kwargs)
    _initialize_missing(model)
    model.eval()
    return model


def _initialize_missing(model) -> None:
    """Lazily created parameters and buffers that loading did not fill get their initial values."""
    for layer in model.sublayers(include_self=True):
        tensors = [*layer.parameters(include_sublayers=False), *layer.buffers(include_sublayers=False)]
        missing = [tensor for tensor in tensors if not tensor._is_initialized()]
        for tensor in missing:
            tensor.initialize()
        if missing and hasattr(model, "_init_weights"):
            model._init_weights(layer)


def register_configs() -> list[str]:
    """Make paddlenlp's `AutoConfig` know every generated config (models it already knows are left alone)."""
    from paddlenlp.transformers import AutoConfig

    registered = []
    for model in known_models():
        cls = config_class(model)
        try:
            AutoConfig.register(cls.model_type, cls)
        except ValueError:
            continue  # paddlenlp's own model of that name keeps its registration
        registered.append(cls.model_type)
    return registered
