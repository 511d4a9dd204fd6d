"""One verification result: the metrics, their bounds, and whether they hold."""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass, field


def first_line(exc: BaseException, width: int = 160) -> str:
    """`Type: message`, its first line, shortened at a word boundary: for notes and one-line verdicts."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return textwrap.shorten(f"{type(exc).__name__}: {text}", width, placeholder=" ...")


@dataclass
class Record:
    model: str
    check: str
    metrics: dict[str, float] = field(default_factory=dict)
    bounds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    trace: list[dict] = field(default_factory=list)
    error: str = ""

    @property
    def applicable(self) -> bool:
        """False when there is nothing to compare against (no reference model here); never counted as a pass."""
        return bool(self.bounds) or bool(self.error)

    @property
    def passed(self) -> bool:
        if self.error:
            return False
        return all(self.metrics.get(k, float("inf")) <= bound for k, bound in self.bounds.items())

    def failures(self) -> list[str]:
        return [
            f"{k} = {self.metrics.get(k)!r} > {b}"
            for k, b in self.bounds.items()
            if not self.metrics.get(k, float("inf")) <= b
        ]

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed, "applicable": self.applicable}
