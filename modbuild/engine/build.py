"""Build the network a ``Model`` section names: a generated causal LM, fresh or from a converted checkpoint, split
for tensor parallelism when ``mp_degree > 1``.

Under TP every rank first builds (or loads) the full single-process model from the same seed, then keeps its
slice, through the model's own TP mappings (``modbuild.tp.worker.load_split``, which checks every shape): TP=2
then starts from exactly the weights TP=1 starts from.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import paddle

from modbuild.engine.config import ConfigError, ModelSection
from modbuild.engine.distributed import DistInfo
from modbuild.engine.tp_state import TPLayout


def _config(section: ModelSection, config_cls: type):
    """The model config: the checkpoint's (with ``init_from``) or the class defaults, with ``Model.config`` on top."""
    base = config_cls()
    for key in section.config:
        if not hasattr(base, key):
            near = difflib.get_close_matches(key, [k for k in vars(base) if not k.startswith("_")], n=1)
            hint = f"; did you mean Model.config.{near[0]}?" if near else ""
            raise ConfigError(f"Model.config.{key}: not a field of {config_cls.__name__}{hint}")
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


def build_model(section: ModelSection, dist: DistInfo, seed: int) -> tuple[paddle.nn.Layer, TPLayout | None]:
    """The network, and under TP how its checkpoints are gathered and split (`modbuild.engine.tp_state`)."""
    from modbuild.models import UnknownModel, causal_lm_class

    try:
        model_cls = causal_lm_class(section.name)
    except UnknownModel as exc:
        raise ConfigError(f"Model.name: {exc}") from None
    config = _config(section, model_cls.config_class)
    paddle.seed(seed)
    if section.init_from is None:
        model = model_cls(config)
    else:
        model = model_cls.from_pretrained(section.init_from, config=config)
    if dist.mp_degree == 1:
        return model, None
    return _tensor_parallel(model, model_cls, config, dist, seed)


def _tensor_parallel(
    full: paddle.nn.Layer, model_cls: type, config, dist: DistInfo, seed: int
) -> tuple[paddle.nn.Layer, TPLayout]:
    from modbuild.tp.worker import load_split

    state = {name: tensor.numpy() for name, tensor in full.state_dict().items()}
    config.tensor_parallel_degree = dist.mp_degree
    config.tensor_parallel_rank = dist.mp_rank
    paddle.seed(seed)
    model = model_cls(config)
    actions = model_cls.get_tensor_parallel_convert_actions(config, list(state), is_split=True)
    load_split(model, state, actions)
    return model, TPLayout({n: list(v.shape) for n, v in state.items()}, actions, dist.mp_group)
