"""Where a conversion writes: a ``--dst`` that never costs the user a file this tool did not write.

A converted checkpoint carries a manifest, ``.modbuild-weights.json``, listing the entries (files and directories
such as a tokenizer folder) the conversion wrote. That manifest is how a later run recognises its own output:

- ``--dst`` may not be ``--src``, lie inside it or contain it (compared as real paths, symlinks resolved);
- a new or empty ``--dst`` is filled; one holding a manifest is updated: the entries this conversion writes and
  those the old manifest lists are replaced or removed, everything else in it is kept;
- any other non-empty ``--dst`` is refused unless ``force``; with it, only the entries this conversion writes are
  replaced (same names), everything else is kept.

Atomicity: everything is written into a temporary directory first (beside a new ``--dst``, inside an existing one,
so that renames never cross filesystems), and nothing in ``--dst`` changes before the whole checkpoint is written.
A new ``--dst`` then appears with one rename. An existing one is updated entry by entry, each entry replaced whole
by a rename; the manifest says ``"complete": false`` while that happens, so a run interrupted in that short window
leaves a checkpoint this tool refuses to read (and a re-run repairs), never a half-written file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from modbuild.atomic import atomic_write, directory_mode, fsync_directory, move_into, remove_entry
from modbuild.weights.hf import BOOKKEEPING_PREFIX, WeightsError

# The manifest, and the prefix of our staging directories inside an existing --dst: bookkeeping, not checkpoint
# entries (never listed, never copied from a --src).
MANIFEST = f"{BOOKKEEPING_PREFIX}json"
STAGING_PREFIX = BOOKKEEPING_PREFIX


def is_ours(name: str) -> bool:
    return name.startswith(BOOKKEEPING_PREFIX)


def read_manifest(directory: Path) -> dict | None:
    """The manifest of a checkpoint this tool wrote, or None; only plain entry names are trusted."""
    path = Path(directory) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not readable JSON ({exc}); delete it if this is not a converted checkpoint")
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not all(_plain_name(name) for name in files):
        raise WeightsError(f"{path}: not a manifest this tool wrote (no list of plain file names)")
    return data


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and not is_ours(name)


def check_source(src: Path) -> None:
    """A source this tool left half-updated (interrupted while renaming into place) is refused."""
    manifest = read_manifest(src)
    if manifest is not None and manifest.get("complete") is False:
        raise WeightsError(
            f"{Path(src) / MANIFEST}: an interrupted conversion left this checkpoint incomplete; run it again"
        )


def check_destination(src: Path, dst: Path, force: bool = False) -> list[str]:
    """Refuse a ``dst`` that would cost the user files; returns the entries a previous conversion wrote there."""
    src, dst = Path(src), Path(dst)
    # Real paths (symlinks resolved) and, for a --src reached through a symlink, the paths as written.
    for a_src, a_dst in ((src.resolve(), dst.resolve()), (Path(os.path.abspath(src)), Path(os.path.abspath(dst)))):
        if relation := _relation(a_src, a_dst):
            where = f"both {a_dst}" if a_dst == a_src else f"{a_dst} and {a_src}"
            raise WeightsError(
                f"--dst {dst} {relation} --src {src} ({where}): writing there would overwrite the source; "
                "choose a directory outside it"
            )
    if not dst.exists() and not dst.is_symlink():
        return []
    if not dst.is_dir():
        raise WeightsError(f"--dst {dst}: exists and is not a directory")
    manifest = read_manifest(dst)
    if manifest is not None:
        return list(manifest["files"])
    present = sorted(entry.name for entry in dst.iterdir() if not entry.name.startswith(STAGING_PREFIX))
    if present and not force:
        shown = ", ".join(present[:5]) + (f", ... ({len(present)} entries)" if len(present) > 5 else "")
        raise WeightsError(
            f"--dst {dst}: not empty ({shown}) and not a checkpoint this tool wrote (no {MANIFEST}); "
            "refusing to overwrite it: choose a new or empty directory, or pass --force to replace only the "
            "files this conversion writes and keep the rest"
        )
    return []


def _relation(src: Path, dst: Path) -> str | None:
    if dst == src:
        return "is the source checkpoint"
    if dst.is_relative_to(src):
        return "is inside the source checkpoint"
    if src.is_relative_to(dst):
        return "contains the source checkpoint"
    return None


@contextmanager
def checkpoint_directory(dst: Path, previous: list[str]) -> Iterator[Path]:
    """Yield an empty staging directory; once the block succeeds its entries become ``dst``'s (see the module
    docstring), with a manifest. On any error ``dst`` is left as it was and the staging directory is removed."""
    dst = Path(dst)
    fresh = not dst.exists()
    if fresh:
        dst.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp"))
        staging.chmod(directory_mode(dst))
    else:
        staging = Path(tempfile.mkdtemp(dir=dst, prefix=STAGING_PREFIX, suffix=".tmp"))
    try:
        yield staging
        written = sorted(name for name in os.listdir(staging) if not is_ours(name))
        if fresh:
            _write_manifest(staging, written, complete=True)
            fsync_directory(staging)
            os.rename(staging, dst)  # never replaces a non-empty directory that appeared meanwhile
        else:
            _install(staging, dst, written, previous)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install(staging: Path, dst: Path, written: list[str], previous: list[str]) -> None:
    _write_manifest(dst, sorted(set(written) | set(previous)), complete=False)
    for name in sorted(set(previous) - set(written)):
        remove_entry(dst / name)
    move_into(staging, dst, written)
    _write_manifest(dst, written, complete=True)


def _write_manifest(directory: Path, files: list[str], complete: bool) -> None:
    manifest = {"written_by": "python -m modbuild.weights", "complete": complete, "files": files}
    atomic_write(directory / MANIFEST, json.dumps(manifest, indent=1) + "\n")
