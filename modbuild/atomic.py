"""Atomic file writes: a reader (or a crash) never sees half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: Path, text: str | bytes) -> None:
    """Write `text` (or bytes) to a temporary file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode(path))  # mkstemp makes the file private (0600); the result is an ordinary file
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_mode(path: Path) -> int:
    """The replaced file's permissions, or what `open()` would give a new file (0666 less the umask)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; on success it is renamed to `path`.

    On any error the temporary directory is removed, so `path` is never left half written. An existing
    `path` is moved aside and deleted only after the new directory is in place (two renames: a crash between
    them leaves the old copy as `.<name>.*.old`, never a partial new one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        tmp.chmod(directory_mode(path))
        yield tmp
        fsync_directory(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def directory_mode(path: Path) -> int:
    """mkdtemp's 0700 -> what `mkdir` would give a new directory (0777 less the umask)."""
    return file_mode(path) | 0o111 & (file_mode(path) >> 2)


def move_into(staging: Path, path: Path, names: list[str]) -> None:
    """Rename each entry ``staging/<name>`` to ``path/<name>`` (same filesystem), replacing what is there.

    A file is replaced by one rename. A directory cannot be renamed over a non-empty one (nor over a file, nor a
    file over a directory), so what is there is first renamed into ``staging`` and deleted once the new entry is
    in place: never half of either.
    """
    for name in names:
        target, new = path / name, staging / name
        if target.is_symlink() or not target.exists() or not target.is_dir() and not new.is_dir():
            os.replace(new, target)
            continue
        aside = Path(tempfile.mkdtemp(dir=staging, prefix=".old.")) / name
        os.replace(target, aside)
        os.replace(new, target)
        shutil.rmtree(aside.parent)
    fsync_directory(path)


def remove_entry(path: Path) -> None:
    """Delete a file, symlink or directory tree; absent is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
