"""Training text as token windows, and a batch order that can be resumed at any step.

Tokens are the text's UTF-8 bytes modulo the vocabulary (no tokenizer that works offline ships with an installed
package here; the verify train checks do the same). The text is cut into non-overlapping windows of
``seq_length`` tokens; the last ``eval_fraction`` of them are the evaluation (and test) split.

The order of the training windows is a permutation drawn from ``seed + epoch``, so the data position is just
``(epoch, batches consumed)``: a resumed run rebuilds the same permutation and skips what was consumed, without
reading it.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modbuild.engine.config import DataSection


class DataError(ValueError):
    """The training text is missing or too short for the configured batch."""


def read_source(source: str) -> bytes:
    """A file path, or ``package:resource`` inside an installed package (``pydoc_data:topics.py``)."""
    path = Path(source)
    if path.is_file():
        return path.read_bytes()
    package, sep, resource = source.partition(":")
    if not sep:
        raise DataError(f"Data.source: {source!r} is neither a file nor package:resource")
    try:
        return (importlib.resources.files(package) / resource).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, IsADirectoryError) as exc:
        raise DataError(f"Data.source: cannot read {source!r}: {exc}") from None


def tokenize(raw: bytes, tokenizer: str) -> np.ndarray:
    """Ids from a HF ``tokenizer.json`` (the `tokenizers` library transformers installs)."""
    from tokenizers import Tokenizer

    path = Path(tokenizer)
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise DataError(f"Data.tokenizer: {path} does not exist")
    ids = Tokenizer.from_file(str(path)).encode(raw.decode("utf-8", errors="replace")).ids
    return np.asarray(ids, dtype="int64")


def windows(cfg: DataSection, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, eval) int64 arrays of shape [n, seq_length]."""
    raw = read_source(cfg.source)
    if cfg.max_bytes:
        raw = raw[: cfg.max_bytes]
    tokens = tokenize(raw, cfg.tokenizer) if cfg.tokenizer else np.frombuffer(raw, dtype=np.uint8).astype("int64")
    tokens = tokens % vocab_size
    count = len(tokens) // cfg.seq_length
    rows = tokens[: count * cfg.seq_length].reshape(count, cfg.seq_length)
    n_eval = int(count * cfg.eval_fraction)
    return rows[: count - n_eval], rows[count - n_eval :]


@dataclass
class Position:
    """Where training is in the data: the epoch and how many of its batches were consumed."""

    epoch: int = 0
    batch: int = 0


class TrainBatches:
    """Per step, this data-parallel rank's rows: ``rows_per_rank`` of a global batch of ``rows_per_rank x dp``.

    Raises DataError at construction when the split holds fewer rows than one global batch.
    """

    def __init__(self, rows: np.ndarray, rows_per_rank: int, dp_degree: int, dp_rank: int, seed: int, shuffle: bool):
        self.rows, self.per_rank, self.dp, self.rank = rows, rows_per_rank, dp_degree, dp_rank
        self.seed, self.shuffle = seed, shuffle
        self.global_rows = rows_per_rank * dp_degree
        if len(rows) < self.global_rows:
            raise DataError(
                f"the training split has {len(rows)} windows, fewer than one batch of {self.global_rows} "
                f"(micro_batch_size x accumulate_steps x dp_degree); use a longer text or smaller batch/seq_length"
            )
        self.per_epoch = len(rows) // self.global_rows

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.rows))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))

    def batches(self, start: Position) -> Iterator[tuple[Position, np.ndarray]]:
        """From `start` on, forever: (the position after this batch, this rank's rows)."""
        epoch, index = start.epoch, start.batch
        while True:
            order = self._order(epoch)
            while index < self.per_epoch:
                first = index * self.global_rows + self.rank * self.per_rank
                index += 1
                yield Position(epoch, index), self.rows[order[first : first + self.per_rank]]
            epoch, index = epoch + 1, 0


def eval_batches(rows: np.ndarray, batch: int, limit: int = 0) -> Iterator[np.ndarray]:
    """Consecutive batches of the eval split (the last partial batch dropped), at most `limit` (0: all)."""
    count = len(rows) // batch
    for i in range(min(count, limit) if limit else count):
        yield rows[i * batch : (i + 1) * batch]
