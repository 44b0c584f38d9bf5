"""The run plan: which specs run, on how many devices, in what order, and how long at best.

Longest expected runs go first (durations recorded by earlier runs, else the spec's
timeout), which is what keeps the machine full at the end of a run. The same plan is
what `harness plan` prints and what the pytest plugin orders its items by.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from .devices import Inventory, skip_reason
from .spec import TIER_SELECTION, Spec


def in_tier(spec: Spec, tier: str | None) -> bool:
    """The tier's marker expression, evaluated on a spec's markers (as `pytest -m` would)."""
    expression = TIER_SELECTION.get(tier or "full")
    if expression is None:
        return True
    markers = set(spec.all_markers)
    if expression == "smoke":
        return "smoke" in markers
    return "integration" in markers and "slow" not in markers


def cache_root(repo: Path) -> Path:
    """Where recorded durations live: outside the repository, one folder per repository path."""
    explicit = os.environ.get("TRAINSPEC_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(str(repo.resolve()).encode()).hexdigest()[:10]
    return base / "trainspec" / f"{repo.resolve().name}-{digest}"


def default_run_dir(repo: Path) -> Path:
    """A fresh run directory under the cache, named by time so runs sort in order."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return cache_root(repo) / "runs" / f"{stamp}-{os.getpid()}"


class DurationCache:
    """Seconds each spec last took, by spec id, shared by every run of one repository."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}

    def record(self, durations: dict[str, float]) -> None:
        if not durations:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            merged = {**self.load(), **durations}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
            os.replace(tmp, self.path)


@dataclass(frozen=True)
class Planned:
    spec: Spec
    devices: int
    expected: float
    recorded: bool
    skip: str | None
    priority: int = 0


@dataclass(frozen=True)
class Plan:
    inventory: Inventory
    runs: list[Planned]
    skipped: list[Planned]

    @property
    def workers(self) -> int:
        return max(1, self.inventory.count)

    @property
    def lower_bound(self) -> float:
        """No schedule beats max(longest run, device-seconds spread over every device)."""
        if not self.runs:
            return 0.0
        longest = max(p.expected for p in self.runs)
        area = sum(max(p.devices, 1) * p.expected for p in self.runs)
        return max(longest, area / self.workers)


def make_plan(specs: list[Spec], inventory: Inventory, durations: dict[str, float], tier: str | None = None) -> Plan:
    """Order the runnable specs longest first; say why each of the others is skipped."""
    planned = []
    for spec in specs:
        if not in_tier(spec, tier):
            continue
        recorded = spec.id in durations
        expected = durations[spec.id] if recorded else spec.timeout
        planned.append(Planned(spec, spec.gpus, expected, recorded, skip_reason(spec, inventory)))
    runs = sorted((p for p in planned if p.skip is None), key=lambda p: (-p.expected, -p.devices, p.spec.id))
    runs = [Planned(p.spec, p.devices, p.expected, p.recorded, None, i) for i, p in enumerate(runs)]
    return Plan(inventory, runs, [p for p in planned if p.skip is not None])
