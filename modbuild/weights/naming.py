"""Other spellings of a checkpoint's names, declared by each generated model class.

- **Legacy aliases** (read only): ``_checkpoint_aliases`` maps a regex to its replacement. TF-era BERT checkpoints
  name LayerNorm parameters ``gamma``/``beta``; they are read as ``weight``/``bias`` and always written in that
  form. A checkpoint holding both spellings of one parameter is an error, never a silent choice.
- **PaddleNLP's naming** (read and written): ``_paddlenlp_renames`` is a list of (regex, replacement) from our
  names (HF's) to the names of PaddleNLP's hand-written model ``_paddlenlp_class``, so that its
  ``from_pretrained`` loads the result (``encoder.layer.N.attention.self.query`` -> ``encoder.layers.N.self_attn
  .q_proj``). The renaming is checked against that PaddleNLP model's own parameters before anything is written.
"""

from __future__ import annotations

import re

from modbuild.weights.hf import WeightsError

NAMINGS = ("hf", "paddlenlp")  # "hf": the generated model's own names, which are HF's


def canonical_names(names: list[str], cls: type) -> dict[str, str]:
    """Checkpoint name -> the name the model's mappings use; legacy spellings resolved, conflicts refused."""
    aliases = _compiled(getattr(cls, "_checkpoint_aliases", {}).items())
    canonical = {name: _rename(name, aliases) for name in names}
    present = set(names)
    both = sorted(f"{old} and {new}" for old, new in canonical.items() if new != old and new in present)
    if both:
        raise WeightsError(f"both the legacy and the current name of the same parameter: {', '.join(both)}")
    return canonical


def _compiled(rules) -> list[tuple[re.Pattern, str]]:
    return [(re.compile(pattern), replacement) for pattern, replacement in rules]


def _rename(name: str, rules: list[tuple[re.Pattern, str]]) -> str:
    for pattern, replacement in rules:
        name = pattern.sub(replacement, name)
    return name


def paddlenlp_names(cls: type, names: list[str]) -> dict[str, str]:
    """Our parameter name -> PaddleNLP's, for a model that declares ``_paddlenlp_class``."""
    if getattr(cls, "_paddlenlp_class", None) is None:
        raise WeightsError(f"{cls.__name__} has no PaddleNLP naming (it declares no _paddlenlp_class)")
    renames = _compiled(cls._paddlenlp_renames)
    out = {name: _rename(name, renames) for name in names}
    if len(set(out.values())) != len(out):
        raise WeightsError(f"{cls.__name__}._paddlenlp_renames maps two parameters to one name")
    return out


def paddlenlp_shapes(cls: type, config) -> dict[str, tuple[int, ...]]:
    """PaddleNLP's model's parameter shapes for ``config``, without allocating its weights."""
    import paddle
    import paddlenlp.transformers as reference_models
    from paddlenlp.transformers.model_utils import no_init_weights

    reference = getattr(reference_models, cls._paddlenlp_class)
    reference_config = reference.config_class(**config.to_dict())
    with no_init_weights(_enable=True), paddle.LazyGuard():
        model = reference(reference_config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def check_paddlenlp_names(cls: type, config, ours: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """Our name -> PaddleNLP's, verified to cover PaddleNLP's model exactly, shape for shape."""
    renamed = paddlenlp_names(cls, list(ours))
    theirs = paddlenlp_shapes(cls, config)
    missing = sorted(set(theirs) - set(renamed.values()))
    extra = sorted(set(renamed.values()) - set(theirs))
    mismatched = sorted(n for o, n in renamed.items() if n in theirs and theirs[n] != ours[o])
    if missing or extra or mismatched:
        raise WeightsError(
            f"{cls.__name__}'s PaddleNLP naming disagrees with paddlenlp.transformers.{cls._paddlenlp_class}: "
            f"not produced {missing}, unknown to it {extra}, shape mismatch {mismatched}"
        )
    return renamed
