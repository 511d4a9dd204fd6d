"""The engine's YAML config: a pydantic schema, `-o key=value` overrides, and errors that name the key.

FleetX's loader printed "a new field detected" for an unknown key and `eval`ed override values. Here an unknown
key is an error naming its path (``Engine.save_load.save_stpes``) and the nearest valid key, a wrong type is an
error naming its path, and an override's value is parsed as YAML (``-o Engine.max_steps=100``), never evaluated.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError


class ConfigError(ValueError):
    """A config file or override is invalid; the message starts with the file (or `-o`) and the key path."""


class _Section(BaseModel):
    # extra="forbid" backs up our own unknown-key walk; populate_by_name lets an alias and the name both work
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)


class MixPrecision(_Section):
    enable: bool = False
    use_pure_fp16: bool = False  # FleetX's switch: pure fp16 (O2) with a loss scaler
    level: Literal["O1", "O2"] = "O2"
    dtype: Literal["float16", "bfloat16"] = "float16"
    scale_loss: float = 32768.0
    custom_black_list: list[str] = Field(default_factory=list)
    custom_white_list: list[str] = Field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.enable or self.use_pure_fp16


class SaveLoad(_Section):
    # `save_steps` is accepted as an alias (the name HF / PaddleNLP trainers use); 0 means never
    save_by_steps: int = Field(0, ge=0, validation_alias=AliasChoices("save_by_steps", "save_steps"))
    output_dir: str = "output"
    ckpt_dir: str | None = None  # a checkpoint directory (or an output_dir holding step_* ones) to resume from
    keep_last: int = Field(2, ge=1)
    # `modbuild train` into an output_dir that holds an earlier run (step_* or metrics.csv) is refused unless this
    # is set (then what the engine wrote there is deleted first) or ckpt_dir resumes from a checkpoint inside it
    overwrite: bool = False


class EngineSection(_Section):
    max_steps: int = Field(100, ge=1)
    num_train_epochs: int = Field(1, ge=1)
    accumulate_steps: int = Field(1, ge=1)
    logging_freq: int = Field(1, ge=1)
    eval_freq: int = Field(0, ge=0)  # 0: no evaluation during fit
    eval_iters: int = Field(1, ge=1)
    test_iters: int = Field(0, ge=0)  # 0: the whole test split
    progress_bar: bool = True
    mix_precision: MixPrecision = Field(default_factory=MixPrecision)
    save_load: SaveLoad = Field(default_factory=SaveLoad)


class ModelSection(_Section):
    name: str  # a generated model: generated.<name>.modeling_<name>
    config: dict[str, Any] = Field(default_factory=dict)  # config fields (a tiny model, dropout, ...)
    init_from: str | None = None  # a Paddle checkpoint directory (`python -m modbuild.weights hf2paddle`)


class DataSection(_Section):
    # a file path, or "package:resource" read with importlib.resources from an installed package
    source: str
    max_bytes: int = Field(0, ge=0)  # 0: the whole text
    # a HF tokenizer.json (or a directory holding one, e.g. a converted checkpoint); None: tokens are bytes
    tokenizer: str | None = None
    seq_length: int = Field(64, ge=2)
    micro_batch_size: int = Field(1, ge=1)  # rows per micro-batch per data-parallel rank
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    shuffle: bool = True


class OptimizerSection(_Section):
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    decay_steps: int = Field(0, ge=0)  # the cosine's horizon; 0: Engine.max_steps (set it to train in stages)
    weight_decay: float = Field(0.0, ge=0)
    beta1: float = 0.9
    beta2: float = 0.95
    epsilon: float = 1e-8
    grad_clip: float = Field(1.0, ge=0)  # global-norm clip; 0 disables it


class DistributedSection(_Section):
    dp_degree: int = Field(1, ge=1)
    mp_degree: int = Field(1, ge=1)


class GlobalSection(_Section):
    seed: int = 1234


class Config(_Section):
    Global: GlobalSection = Field(default_factory=GlobalSection)
    Engine: EngineSection = Field(default_factory=EngineSection)
    Model: ModelSection
    Data: DataSection
    Optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    Distributed: DistributedSection = Field(default_factory=DistributedSection)
    _source: str = PrivateAttr("config")  # the file (and -o overrides) errors found later are reported against

    @property
    def source(self) -> str:
        return self._source

    def error(self, *problems: str) -> ConfigError:
        """A ConfigError for problems found after the schema (``Key.path: message``), each prefixed by the file."""
        return ConfigError(f"{self._source}: " + f"\n{self._source}: ".join(problems))


def _valid_keys(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    """Each accepted key (names and aliases) -> its nested section class, or None for a leaf."""
    keys: dict[str, type[BaseModel] | None] = {}
    for name, field in model.model_fields.items():
        nested = (
            field.annotation
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
            else None
        )
        keys[name] = nested
        alias = field.validation_alias
        for choice in alias.choices if isinstance(alias, AliasChoices) else []:
            keys[str(choice)] = nested
    return keys


def _unknown_keys(data: Any, model: type[BaseModel], path: str = "") -> list[str]:
    if not isinstance(data, dict):
        return []
    problems = []
    valid = _valid_keys(model)
    for key, value in data.items():
        where = f"{path}{key}"
        if key not in valid:
            near = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.5)
            hint = f"; did you mean {path}{near[0]}?" if near else f"; valid keys: {', '.join(valid)}"
            problems.append(f"{where}: unknown key{hint}")
        elif valid[key] is not None:
            problems.extend(_unknown_keys(value, valid[key], f"{where}."))
    return problems


def _type_errors(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
        out.append(f"{where}: {err['msg']}{got}")
    return out


def validate(data: Any, source: str) -> Config:
    """`data` (a parsed YAML mapping) as a Config, or ConfigError listing every problem with its key path."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of sections (Engine, Model, Data, ...), got {type(data).__name__}"
        )
    if problems := _unknown_keys(data, Config):
        raise ConfigError(f"{source}: " + f"\n{source}: ".join(problems))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + f"\n{source}: ".join(_type_errors(exc))) from None
    config._source = source
    return config


def apply_override(data: dict, override: str) -> None:
    """Set ``Section.key=value`` in `data`; the value is parsed as YAML (``100``, ``1e-3``, ``[a, b]``, ``null``)."""
    path, sep, text = override.partition("=")
    keys = path.strip().split(".")
    if not sep or not all(keys):
        raise ConfigError(f"-o {override}: expected Section.key=value, e.g. -o Engine.max_steps=100")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"-o {override}: the value is not valid YAML: {exc}") from None
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"-o {override}: {'.'.join(keys[: i + 1])} is a value, not a section")
        node = child
    node[keys[-1]] = value


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config, apply `-o` overrides in order, validate."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.y*ml"))
        hint = f"; it holds {', '.join(found)}" if found else ""
        raise ConfigError(f"{path}: is a directory; expected a YAML config file{hint}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    data = {} if data is None else data
    for override in overrides:
        if not isinstance(data, dict):
            break  # validate() names the problem
        apply_override(data, override)
    source = f"{path}" + (f" (with -o {' -o '.join(overrides)})" if overrides else "")
    return validate(data, source)
