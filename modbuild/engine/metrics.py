"""Where the engine's logs go: a CSV (``metrics.csv``), VisualDL scalars (``vdl/``) and, at the end, a PNG loss
curve (``loss.png``). Only rank 0 writes."""

from __future__ import annotations

import csv
from pathlib import Path

from modbuild.atomic import atomic_write

COLUMNS = ("step", "epoch", "loss", "lr", "tokens_per_s", "elapsed", "eval_loss")


class Metrics:
    def __init__(self, output_dir: Path, enabled: bool = True, start_step: int = 0) -> None:
        """`start_step`: the step training (re)starts after; rows of later steps, logged by a run that was stopped
        before its next checkpoint, are dropped so the CSV matches the training that counts."""
        self.dir, self.enabled = Path(output_dir), enabled
        self.csv_path = self.dir / "metrics.csv"
        self._writer = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        kept = []
        if self.csv_path.exists():
            with open(self.csv_path, newline="") as f:
                kept = [r for r in csv.reader(f)][1:]
            kept = [r for r in kept if r and int(r[0]) <= start_step]
        lines = [",".join(COLUMNS)] + [",".join(r) for r in kept]
        atomic_write(self.csv_path, "\n".join(lines) + "\n")
        from visualdl import LogWriter

        self._writer = LogWriter(logdir=str(self.dir / "vdl"))

    def log(self, row: dict[str, float]) -> None:
        """Append one row (missing columns empty) and the same scalars to VisualDL, tagged ``train/<name>``."""
        if not self.enabled:
            return
        with open(self.csv_path, "a", newline="") as f:  # appended: a resumed run continues the same file
            csv.writer(f).writerow([row.get(c, "") for c in COLUMNS])
        for name, value in row.items():
            if name not in ("step", "epoch"):
                self._writer.add_scalar(tag=f"train/{name}", step=int(row["step"]), value=float(value))

    def close(self) -> Path | None:
        """Flush VisualDL and draw the loss curve; returns the PNG's path."""
        if not self.enabled:
            return None
        self._writer.close()
        return plot_loss(self.csv_path, self.dir / "loss.png")


def plot_loss(csv_path: Path, png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display here; also safe under a launcher
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    train = [(int(r["step"]), float(r["loss"])) for r in rows if r["loss"]]
    evals = [(int(r["step"]), float(r["eval_loss"])) for r in rows if r["eval_loss"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png)  # a reader never sees half a PNG
    return png
