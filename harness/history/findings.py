"""What the history found for one run: drift, flaky specs, new failures, quarantine (plain data, no SQL)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FAILED = ("failed", "error")


@dataclass
class DriftFinding:
    spec: str
    metric: str
    commit: str | None
    change: float
    runs: int
    noise: float
    text: str


@dataclass
class FlakyFinding:
    spec: str
    failures: int
    runs: int
    text: str


@dataclass
class Findings:
    drift: list[DriftFinding] = field(default_factory=list)
    flaky: list[FlakyFinding] = field(default_factory=list)
    new_failures: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
