"""Tensor-parallel split of a full Paddle checkpoint into per-rank files, by ``_get_tensor_parallel_mappings``.

Rank ``r`` gets paddlenlp's own per-rank names (``weight_name_suffix()`` -> ``tpXX``): ``model.tp00.safetensors``,
or ``model-00001-of-00002.tp00.safetensors`` plus ``model.safetensors.index.tp00.json`` for a sharded input.
The ``.tp`` in the name tells paddlenlp's ``from_pretrained`` the tensors are already split. Each input tensor is
read once and written to every rank, so memory stays at one tensor plus its slices.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from tqdm import tqdm

from modbuild.atomic import atomic_directory
from modbuild.weights.convert import (
    Entry,
    ShardWriter,
    build_config,
    expected_shapes,
    plan_shards,
    resolve_model,
    skipped_keys,
    write_index,
)
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


def _split_shape(fn: Callable | None, entry: Entry, tp: int) -> tuple[int, ...]:
    if fn is None:
        return entry.shape  # replicated (norms, ...)
    try:
        # A zero-stride dummy: the real split function reports the slice shape without touching data.
        return tuple(fn(np.broadcast_to(np.zeros((), np.float32), entry.shape)).shape)
    except ValueError as exc:
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
    src: str | Path, dst: str | Path, tp: int, model: str | None = None, progress: bool = False
) -> Path:
    """Full Paddle checkpoint in ``src`` -> per-rank checkpoints for ``tp`` ranks in ``dst`` (config copied)."""
    src, dst = Path(src), Path(dst)
    if tp < 2:
        raise WeightsError(f"--tp must be at least 2, got {tp}")
    raw = read_json(src / CONFIG_NAME)
    cls = resolve_model(model or raw.get("model_type"), raw.get("architectures"))
    expected = expected_shapes(cls, build_config(cls, raw))
    checkpoint = scan_checkpoint(src)
    pairs = [(name, name, False) for name in expected]
    skipped = skipped_keys(checkpoint, pairs, getattr(cls, "_checkpoint_skips", {}), {})
    plan = plan_shards(checkpoint, pairs, expected, skipped=dict(skipped))
    actions = [rank_actions(cls, raw, tp, r, list(expected)) for r in range(tp)]
    specs = {
        shard: [[(e.dst, e.dtype, _split_shape(actions[r].get(e.dst), e, tp)) for e in entries] for r in range(tp)]
        for shard, entries in plan.items()
    }
    with atomic_directory(dst) as tmp:
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
