"""What `modbuild train` does with an output directory that holds an earlier run: refuse, resume, or start clean.

An earlier run is a ``step_*`` checkpoint or a ``metrics.csv``. Training into such a directory from scratch would
leave the old checkpoints beside the new ones (a later ``evaluate`` loading a stale one) and mix two runs' logs,
so it is refused unless the run resumes from a checkpoint inside it (``Engine.save_load.ckpt_dir``), or
``Engine.save_load.overwrite`` asks for a clean start: then only what the engine writes there is deleted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from modbuild.engine.checkpoint import checkpoints, resolve
from modbuild.engine.config import Config

WRITTEN = ("metrics.csv", "loss.png")  # files the engine writes in output_dir (besides step_*/, vdl/, logs/)
LOGS = ("workerlog.*", "launcher.log", "envlog.*", "backup_env.*.json", "default.*.log")  # a launch's, in logs/


def earlier_run(output_dir: Path) -> list[str]:
    """What an earlier run left in `output_dir` (empty if none)."""
    found = [p.name for p in checkpoints(output_dir)]
    return found + [name for name in WRITTEN[:1] if (Path(output_dir) / name).is_file()]


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def prepare(config: Config) -> None:
    """Refuse, allow (a resume in place) or clean an output dir holding an earlier run, before anything runs."""
    save_load = config.Engine.save_load
    out = Path(save_load.output_dir)
    found = earlier_run(out)
    if not found:
        return
    resuming_here = bool(save_load.ckpt_dir) and _inside(resolve(save_load.ckpt_dir), out)
    if save_load.overwrite:
        if resuming_here:
            raise config.error(
                f"Engine.save_load.overwrite: would delete {save_load.ckpt_dir}, the checkpoint ckpt_dir resumes "
                "from; resume (drop overwrite) or start clean (drop ckpt_dir)"
            )
        clean(out)
        return
    if resuming_here:
        return
    shown = ", ".join(found[:3] + (["..."] if len(found) > 3 else []))
    raise config.error(
        f"Engine.save_load.output_dir: {out} holds an earlier run ({shown}); training into it from scratch would mix "
        f"the two. Resume it with -o Engine.save_load.ckpt_dir={out}, start over with -o "
        "Engine.save_load.overwrite=true (deletes only what the engine wrote there: step_*/, metrics.csv, "
        "loss.png, vdl/, logs/), or choose another output_dir"
    )


def clean(output_dir: Path) -> None:
    """Delete what the engine wrote in `output_dir`, nothing else (a directory left empty goes too)."""
    out = Path(output_dir)
    for path in [*checkpoints(out), *out.glob(".step_*.tmp"), *out.glob(".step_*.old")]:
        shutil.rmtree(path, ignore_errors=True)
    for name in WRITTEN:
        (out / name).unlink(missing_ok=True)
        for tmp in out.glob(f".{name}.*tmp*"):  # an interrupted atomic write's temporary file
            tmp.unlink(missing_ok=True)
    for sub, patterns in (("vdl", ("vdlrecords.*",)), ("logs", LOGS)):
        for pattern in patterns:
            for file in (out / sub).glob(pattern):
                file.unlink(missing_ok=True)
        if (out / sub).is_dir() and not any((out / sub).iterdir()):
            (out / sub).rmdir()
