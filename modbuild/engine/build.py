"""Build the network a ``Model`` section names: a generated causal LM, fresh or from a converted checkpoint, split
for tensor parallelism when ``mp_degree > 1``.

Under TP every rank first builds (or loads) the full single-process model from the same seed, then keeps its
slice, through the model's own TP mappings (``modbuild.tp.split.load_split``, which checks every shape): TP=2
then starts from exactly the weights TP=1 starts from.
"""

from __future__ import annotations

import difflib
import inspect
import json
from pathlib import Path
from typing import Any

import paddle
from pydantic import ConfigDict, ValidationError, create_model

from modbuild.engine.config import Config, ConfigError, ModelSection
from modbuild.engine.distributed import DistInfo
from modbuild.engine.tp_state import TPLayout

# what tensor parallelism splits evenly across the mp_degree processes (the fields a model's config has)
TP_SPLIT = ("num_attention_heads", "num_key_value_heads", "vocab_size", "intermediate_size", "moe_intermediate_size")
POSITIVE = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")


def _signature(config_cls: type) -> dict[str, inspect.Parameter]:
    """The config class's keyword parameters with their resolved type hints (none if they do not resolve)."""
    try:
        params = inspect.signature(config_cls.__init__, eval_str=True).parameters
    except (NameError, TypeError, SyntaxError):
        params = inspect.signature(config_cls.__init__).parameters
    return {n: p for n, p in params.items() if n != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}


def _field_problems(values: dict[str, Any], config_cls: type) -> list[str]:
    """Unknown keys (with the nearest field) and values of the wrong type, as ``Model.config.key: message``."""
    params, base = _signature(config_cls), config_cls()
    known = sorted(set(params) | {k for k in vars(base) if not k.startswith("_")})
    problems, typed = [], {}
    for key in values:
        if key not in params and not hasattr(base, key):
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean Model.config.{near[0]}?" if near else ""
            problems.append(f"Model.config.{key}: not a field of {config_cls.__name__}{hint}")
        elif key in params and params[key].annotation is not inspect.Parameter.empty:
            typed[key] = (params[key].annotation, ...)
    if typed:
        schema = create_model("ModelConfig", __config__=ConfigDict(strict=True, arbitrary_types_allowed=True), **typed)
        try:
            schema.model_validate({k: values[k] for k in typed})
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"])
                problems.append(f"Model.config.{where}: {err['msg']} (got {err['input']!r})")
    return problems


def _shape_problems(config: Any, explicit_head_dim: bool, mp_degree: int) -> list[str]:
    """Sizes that must be positive, heads that must divide, and what TP splits, against the built config."""
    field = {n: getattr(config, n, None) for n in (*POSITIVE, *TP_SPLIT)}
    bad = [
        f"Model.config.{n}: must be a positive integer (got {field[n]!r})" for n in POSITIVE if _not_positive(field[n])
    ]
    if bad:
        return bad
    heads, kv, hidden = field["num_attention_heads"], field["num_key_value_heads"], field["hidden_size"]
    problems = []
    if not explicit_head_dim and heads and hidden and hidden % heads:
        problems.append(f"Model.config.hidden_size: {hidden} is not a multiple of num_attention_heads {heads}")
    if heads and kv and heads % kv:
        problems.append(
            f"Model.config.num_key_value_heads: {kv} does not divide num_attention_heads {heads} "
            "(each key/value head serves the same number of query heads)"
        )
    if mp_degree > 1:
        problems += [
            f"Distributed.mp_degree: {mp_degree} does not divide Model.config.{name} ({field[name]}); tensor "
            f"parallelism splits it evenly over the mp_degree processes"
            for name in TP_SPLIT
            if isinstance(field[name], int) and field[name] % mp_degree
        ]
    return problems


def _not_positive(value: Any) -> bool:
    return value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1)


def _base_config(section: ModelSection, config_cls: type):
    """The model config: the checkpoint's (with ``init_from``) or the class defaults, with ``Model.config`` on top."""
    if section.init_from is None:
        return config_cls(**section.config)
    config_file = Path(section.init_from) / "config.json"
    if not config_file.is_file():
        raise ConfigError(
            f"Model.init_from: {config_file} does not exist (convert one with python -m modbuild.weights)"
        )
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type != section.name:
        raise ConfigError(
            f"Model.init_from: {config_file} holds a {model_type!r} model, but Model.name is {section.name!r}"
        )
    config = config_cls.from_pretrained(section.init_from)
    for key, value in section.config.items():
        setattr(config, key, value)
    return config


def _explicit_head_dim(section: ModelSection, params: dict[str, inspect.Parameter]) -> bool:
    """Whether head_dim is set rather than derived as hidden_size / num_attention_heads."""
    if section.config.get("head_dim") is not None:
        return True
    if section.init_from is not None:
        return json.loads((Path(section.init_from) / "config.json").read_text()).get("head_dim") is not None
    return "head_dim" in params and params["head_dim"].default not in (None, inspect.Parameter.empty)


def model_config(config: Config) -> tuple[type, Any]:
    """(the ``*ForCausalLM`` class, its validated config). Every problem is a ConfigError naming the config file and
    the key; found before any process is launched or any weight is built."""
    from modbuild.models import UnknownModel, causal_lm_class

    section = config.Model
    try:
        model_cls = causal_lm_class(section.name)
    except UnknownModel as exc:
        raise config.error(f"Model.name: {exc}") from None
    if problems := _field_problems(section.config, model_cls.config_class):
        raise config.error(*problems)
    if bad := [
        f"Model.config.{n}: must be a positive integer" for n in POSITIVE if _not_positive(section.config.get(n))
    ]:
        raise config.error(*bad)
    try:
        built = _base_config(section, model_cls.config_class)
    except ConfigError as exc:
        raise config.error(str(exc)) from None
    except (TypeError, ValueError, ArithmeticError) as exc:  # the class's own checks, in its own words
        raise config.error(f"Model.config: {model_cls.config_class.__name__} rejects these values: {exc}") from None
    head_dim = _explicit_head_dim(section, _signature(model_cls.config_class))
    if problems := _shape_problems(built, head_dim, config.Distributed.mp_degree):
        raise config.error(*problems)
    return model_cls, built


def build_model(config: Config, dist: DistInfo) -> tuple[paddle.nn.Layer, TPLayout | None]:
    """The network, and under TP how its checkpoints are gathered and split (`modbuild.engine.tp_state`)."""
    model_cls, model_config_ = model_config(config)
    section, seed = config.Model, config.Global.seed
    paddle.seed(seed)
    if section.init_from is None:
        model = model_cls(model_config_)
    else:
        model = model_cls.from_pretrained(section.init_from, config=model_config_)
    if dist.mp_degree == 1:
        return model, None
    return _tensor_parallel(model, model_cls, model_config_, dist, seed)


def _tensor_parallel(
    full: paddle.nn.Layer, model_cls: type, config, dist: DistInfo, seed: int
) -> tuple[paddle.nn.Layer, TPLayout]:
    from modbuild.tp.split import load_split

    state = {name: tensor.numpy() for name, tensor in full.state_dict().items()}
    config.tensor_parallel_degree = dist.mp_degree
    config.tensor_parallel_rank = dist.mp_rank
    paddle.seed(seed)
    model = model_cls(config)
    actions = model_cls.get_tensor_parallel_convert_actions(config, list(state), is_split=True)
    load_split(model, state, actions)
    return model, TPLayout({n: list(v.shape) for n, v in state.items()}, actions, dist.mp_group)
