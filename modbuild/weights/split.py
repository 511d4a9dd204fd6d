"""Tensor-parallel split of a full Paddle checkpoint into per-rank files, by ``_get_tensor_parallel_mappings``.

Rank ``r`` gets paddlenlp's own per-rank names (``weight_name_suffix()`` -> ``tpXX``): ``model.tp00.safetensors``,
or ``model-00001-of-00002.tp00.safetensors`` plus ``model.safetensors.index.tp00.json`` for a sharded input.
The ``.tp`` in the name tells paddlenlp's ``from_pretrained`` the tensors are already split. Each input tensor is
read once and written to every rank, so memory stays at one tensor plus its slices.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from tqdm import tqdm

from modbuild.weights.convert import (
    Entry,
    ShardWriter,
    build_config,
    check_side,
    expected_shapes,
    explain_model_type,
    name_pairs,
    plan_shards,
    resolve_model,
    skipped_keys,
    write_index,
)
from modbuild.weights.destination import check_destination, check_source, checkpoint_directory
from modbuild.weights.hf import (
    CONFIG_NAME,
    SAFE_INDEX_NAME,
    ShardReader,
    WeightsError,
    copy_extra_files,
    read_json,
    scan_checkpoint,
)

Spec = tuple[str, str, tuple[int, ...]]


def rank_file_name(name: str, rank: int) -> str:
    """paddlenlp's ``_add_variant(name, "tpXX")``: the variant goes before the extension."""
    stem, _, extension = name.rpartition(".")
    return f"{stem}.tp{rank:02d}.{extension}"


def rank_actions(cls: type, raw: dict, tp: int, rank: int, names: list[str]) -> dict[str, Callable]:
    """Checkpoint name -> split function for one rank (mapping keys carry no model prefix)."""
    config = build_config(cls, raw, tensor_parallel_degree=tp, tensor_parallel_rank=rank)
    by_base = cls._get_tensor_parallel_mappings(config, is_split=True)
    actions, matched = {}, set()
    for name in names:
        parts = name.split(".")
        base = next((s for s in (".".join(parts[i:]) for i in range(len(parts))) if s in by_base), None)
        if base is not None:
            actions[name] = by_base[base]
            matched.add(base)
    if unmatched := sorted(set(by_base) - matched):
        raise WeightsError(f"{cls.__name__}._get_tensor_parallel_mappings names absent tensors: {unmatched}")
    return actions


# Whole heads go to each rank: a dimension divisible by the degree is not enough when the heads are not.
_HEAD_FIELDS = ("num_attention_heads", "num_key_value_heads")
_LAYER_INDEX = re.compile(r"\.\d+\.")  # layers.3.mlp -> layers.*.mlp: one line per layer pattern
# The config fields a split dimension usually is, named in the error instead of the tensor when one matches.
_VOCAB_TENSOR, _VOCAB_FIELDS = re.compile(r"embed|lm_head"), ("vocab_size",)
_SIZE_FIELDS = (
    "intermediate_size",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
    "n_inner",
)


def _split_size(fn: Callable, shape: tuple[int, ...]) -> int | None:
    """The dimension a split function divides (paddlenlp's ``is_column``: the last axis, else the first)."""
    is_column = getattr(fn, "keywords", {}).get("is_column")
    if is_column is None or not shape:
        return None
    return shape[-1] if is_column else shape[0]


def check_tp_degree(config_path: Path, config, tp: int, actions: dict[str, Callable], shapes: dict) -> None:
    """Every head count and split dimension must divide by ``tp``; else say which (as config fields where one
    matches, else as tensors, one per layer pattern) and which degrees would work."""
    fields = {f: getattr(config, f, None) for f in _HEAD_FIELDS}
    sizes = {f"{f} {v}": v for f, v in fields.items() if isinstance(v, int)}
    others = {}
    for name, fn in sorted(actions.items()):
        size = _split_size(fn, shapes[name])
        if size is None:
            continue
        candidates = _VOCAB_FIELDS if _VOCAB_TENSOR.search(name) else _SIZE_FIELDS
        field = next((f for f in candidates if getattr(config, f, None) == size), None)
        if field is not None:
            sizes[f"{field} {size}"] = size
        else:
            others.setdefault(f"{_LAYER_INDEX.sub('.*.', name)} {list(shapes[name])}", size)
    bad = [label for label, size in sizes.items() if size % tp]
    bad = bad or [f"{label} (split dimension {size})" for label, size in others.items() if size % tp][:3]
    if bad:
        common = math.gcd(*sizes.values(), *others.values())
        working = [d for d in range(2, common + 1) if common % d == 0][:8]
        hint = f"--tp {' or '.join(map(str, working))} would" if working else "no degree above 1 does"
        raise WeightsError(
            f"{config_path}: --tp {tp} does not divide {', '.join(bad)}: every rank holds an equal share of "
            f"the attention heads, key/value heads, vocabulary and MLP columns ({hint})"
        )


def _split_shape(fn: Callable | None, entry: Entry, tp: int) -> tuple[int, ...]:
    if fn is None:
        return entry.shape  # replicated (norms, ...)
    try:
        # A zero-stride dummy: the real split function reports the slice shape without touching data.
        return tuple(fn(np.broadcast_to(np.zeros((), np.float32), entry.shape)).shape)
    except (ValueError, AssertionError) as exc:  # paddlenlp asserts divisibility; check_tp_degree ran first
        raise WeightsError(f"{entry.dst} {list(entry.shape)} cannot be split {tp} ways: {exc}") from None


def _split_shard(
    directory: Path,
    shard: str,
    entries: list[Entry],
    actions: list[dict],
    specs: list[list[Spec]],
    out_dir: Path,
    progress: bool,
) -> list[int]:
    with ExitStack() as stack:
        reader = stack.enter_context(ShardReader(directory / shard))
        writers = [
            stack.enter_context(ShardWriter(out_dir / rank_file_name(shard, r), specs[r], {"format": "np"}))
            for r in range(len(actions))
        ]
        for entry in tqdm(entries, desc=shard, unit="tensor", disable=not progress):
            array = reader.get(entry.src)
            for writer, rank_action in zip(writers, actions):
                fn = rank_action.get(entry.dst)
                writer.write(entry.dst, array if fn is None else fn(array))
    return [writer.nbytes for writer in writers]


def split_tensor_parallel(
    src: str | Path, dst: str | Path, tp: int, model: str | None = None, progress: bool = False, force: bool = False
) -> Path:
    """Full Paddle checkpoint in ``src`` -> per-rank checkpoints for ``tp`` ranks in ``dst`` (config copied).
    An existing ``dst``: as for hf2paddle (``modbuild.weights.destination``)."""
    src, dst = Path(src), Path(dst)
    if tp < 2:
        raise WeightsError(f"--tp must be at least 2, got {tp}")
    previous = check_destination(src, dst, force)
    check_source(src)
    raw = read_json(src / CONFIG_NAME)
    cls = resolve_model(model or raw.get("model_type"), raw.get("architectures"))
    try:
        config = build_config(cls, raw)
        expected = expected_shapes(cls, config)
        actions = [rank_actions(cls, raw, tp, r, list(expected)) for r in range(tp)]
        check_tp_degree(src / CONFIG_NAME, config, tp, actions[0], expected)
        checkpoint = scan_checkpoint(src)
        check_side(checkpoint, "Paddle", list(expected), [hf for hf, _, _ in name_pairs(cls, config, expected)])
        pairs = [(name, name, False) for name in expected]
        skipped = skipped_keys(checkpoint, pairs, getattr(cls, "_checkpoint_skips", {}), {})
        plan = plan_shards(checkpoint, pairs, expected, skipped=dict(skipped))
    except WeightsError as exc:
        raise explain_model_type(exc, src / CONFIG_NAME, model, cls, raw.get("model_type")) from None
    specs = {
        shard: [[(e.dst, e.dtype, _split_shape(actions[r].get(e.dst), e, tp)) for e in entries] for r in range(tp)]
        for shard, entries in plan.items()
    }
    with checkpoint_directory(dst, previous) as tmp:
        copy_extra_files(src, tmp)
        shutil.copy2(src / CONFIG_NAME, tmp / CONFIG_NAME)
        weight_maps, totals = [{} for _ in range(tp)], [0] * tp
        for shard, entries in plan.items():
            sizes = _split_shard(src, shard, entries, actions, specs[shard], tmp, progress)
            for r in range(tp):
                weight_maps[r] |= {e.dst: rank_file_name(shard, r) for e in entries}
                totals[r] += sizes[r]
        if checkpoint.sharded:
            for r in range(tp):
                write_index(
                    tmp / rank_file_name(SAFE_INDEX_NAME, r),
                    weight_maps[r],
                    totals[r],
                    sum(math.prod(spec[2]) for shard_specs in specs.values() for spec in shard_specs[r]),
                )
    return dst
