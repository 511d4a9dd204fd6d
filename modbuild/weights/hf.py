"""Reading checkpoint directories (HF or Paddle layout: safetensors, optionally sharded) and HF config.json.

Tensors are read with ``safetensors.safe_open(..., framework="np")``; no torch. bf16 needs no special path:
safetensors' numpy backend returns ``ml_dtypes.bfloat16`` arrays (ml_dtypes ships with paddle), so every dtype
is kept bit for bit. Only headers are read while scanning; tensor data is read later, one tensor at a time.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

CONFIG_NAME = "config.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_INDEX_NAME = "model.safetensors.index.json"
# Weight files are rewritten, never copied through; everything else in a checkpoint directory is.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".pdparams", ".ckpt", ".h5", ".msgpack")
# This tool's bookkeeping in a checkpoint directory (its manifest, staging directories): never copied through.
BOOKKEEPING_PREFIX = ".modbuild-weights."


class WeightsError(Exception):
    """A checkpoint that cannot be converted; the message names the problem. Nothing was written."""


@dataclass(frozen=True)
class TensorInfo:
    shard: str  # file name inside the checkpoint directory
    dtype: str  # safetensors dtype code: "F32", "BF16", ...
    shape: tuple[int, ...]


@dataclass
class Checkpoint:
    directory: Path
    sharded: bool  # True when read through an index (the output is then sharded the same way)
    shards: dict[str, list[str]] = field(default_factory=dict)  # shard file -> tensor names
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    formats: dict[str, str | None] = field(default_factory=dict)  # shard file -> its metadata's "format"


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise WeightsError(f"{path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not readable JSON ({exc})") from None


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Names, dtypes and shapes of one safetensors file, and its metadata; a truncated or corrupt file is a
    WeightsError."""
    try:
        with safe_open(path, framework="np") as handle:
            tensors = {
                name: TensorInfo(
                    path.name, handle.get_slice(name).get_dtype(), tuple(handle.get_slice(name).get_shape())
                )
                for name in handle.keys()  # noqa: SIM118 - safe_open is not iterable
            }
            return tensors, handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path}: truncated or corrupt safetensors file ({exc})") from None


def scan_checkpoint(
    directory: Path, index_name: str = SAFE_INDEX_NAME, single_name: str = SAFE_WEIGHTS_NAME
) -> Checkpoint:
    """Read the index (if any) and every shard header, checking that index and shards agree."""
    directory = Path(directory)
    if (directory / index_name).is_file():
        weight_map = read_json(directory / index_name).get("weight_map")
        if not isinstance(weight_map, dict):
            raise WeightsError(f"{directory / index_name}: no weight_map")
        expected = {}
        for name, shard in weight_map.items():
            expected.setdefault(shard, set()).add(name)
        absent = sorted(shard for shard in expected if not (directory / shard).is_file())
        if absent:
            raise WeightsError(f"{directory / index_name} names missing shard file(s): {', '.join(absent)}")
        checkpoint = Checkpoint(directory, sharded=True)
    elif (directory / single_name).is_file():
        expected, checkpoint = None, Checkpoint(directory, sharded=False)
    else:
        raise WeightsError(f"{directory}: no {single_name} or {index_name}")
    for shard in sorted(expected) if expected is not None else [single_name]:
        _add_shard(checkpoint, shard, None if expected is None else expected[shard])
    return checkpoint


def _add_shard(checkpoint: Checkpoint, shard: str, listed: set[str] | None) -> None:
    header, metadata = read_header(checkpoint.directory / shard)
    checkpoint.formats[shard] = metadata.get("format")
    if listed is not None and listed != set(header):
        absent, unlisted = sorted(listed - set(header)), sorted(set(header) - listed)
        raise WeightsError(
            f"{checkpoint.directory / shard} disagrees with the index: listed but absent {absent}, "
            f"present but unlisted {unlisted}"
        )
    duplicates = sorted(set(header) & set(checkpoint.tensors))
    if duplicates:
        raise WeightsError(f"tensors stored in more than one shard: {duplicates}")
    checkpoint.shards[shard] = list(header)
    checkpoint.tensors.update(header)


class ShardReader:
    """Reads tensors one at a time from one safetensors file.

    ``safe_open`` memory-maps the file, and every page a read touches stays in this process's RSS until the
    map is closed. Reopening after ``window`` bytes keeps that at about one window instead of the whole shard.
    """

    def __init__(self, path: Path, window: int = 256 * 2**20):
        self.path, self.window, self._handle, self._since_open = Path(path), window, None, 0

    def get(self, name: str) -> np.ndarray:
        if self._handle is None or self._since_open >= self.window:
            self.close()
            self._handle, self._since_open = safe_open(self.path, framework="np").__enter__(), 0
        array = self._handle.get_tensor(name)
        self._since_open += array.nbytes
        return array

    def close(self) -> None:
        if self._handle is not None:
            self._handle.__exit__(None, None, None)
            self._handle = None

    def __enter__(self) -> ShardReader:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *_) -> None:
        self.close()


def normalise_hf_config(raw: dict) -> dict:
    """HF config.json -> the transformers-4 spelling our config classes take.

    transformers 5 writes ``dtype`` for ``torch_dtype`` and moves ``rope_theta`` / ``rope_scaling`` into
    ``rope_parameters``; left alone, paddlenlp would silently use rope_theta=10000 (a 5.5 logit error).
    """
    config = dict(raw)
    if "dtype" in config and "torch_dtype" not in config:
        config["torch_dtype"] = config.pop("dtype")
    params = config.pop("rope_parameters", None)
    if params is not None:
        _apply_rope_parameters(config, params)
    return config


def _apply_rope_parameters(config: dict, params: dict) -> None:
    if not isinstance(params, dict) or "rope_theta" not in params:
        raise WeightsError(
            f"config.json rope_parameters has no rope_theta (per-layer-type rope is unsupported): {params}"
        )
    theta = params["rope_theta"]
    if config.get("rope_theta", theta) != theta:
        raise WeightsError(f"config.json: rope_theta {config['rope_theta']} conflicts with rope_parameters {theta}")
    config["rope_theta"] = theta
    scaling = {key: value for key, value in params.items() if key != "rope_theta"}
    if scaling.get("rope_type", scaling.get("type", "default")) != "default":
        config["rope_scaling"] = scaling
    elif set(scaling) - {"rope_type", "type"}:
        # A default rope with extra fields has no transformers-4 spelling; refuse rather than drop them.
        raise WeightsError(f"config.json rope_parameters: unsupported fields for default rope {sorted(scaling)}")
    else:
        config.setdefault("rope_scaling", None)


def copy_extra_files(src: Path, dst: Path) -> None:
    """Copy tokenizer files, generation config, README, ...: everything but config.json, weights and indexes."""
    for entry in sorted(Path(src).iterdir()):
        name = entry.name
        if name == CONFIG_NAME or name.endswith(_WEIGHT_SUFFIXES) or ".index" in name and name.endswith(".json"):
            continue
        if name.startswith(BOOKKEEPING_PREFIX):
            continue
        if entry.is_dir():
            shutil.copytree(entry, dst / name)
        else:
            shutil.copy2(entry, dst / name)
