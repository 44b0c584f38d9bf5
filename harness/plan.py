"""The run plan: which specs run, on how many devices, in what order, and how long at best.

Several orders (longest, widest, largest device-seconds first) are simulated over the
expected durations (recorded by earlier runs, else the spec's timeout) and the one that
finishes first is kept. The same plan is what `harness plan` prints and what the pytest
plugin orders its items by.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import heapq
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from .backends import skip_reason
from .devices import Inventory
from .files import KeptFileWarning, atomic_write_text, read_json
from .spec import Spec
from .specfiles import in_tier


def cache_root(repo: Path) -> Path:
    """Where recorded durations live: outside the repository, one folder per repository path."""
    explicit = os.environ.get("TRAINSPEC_CACHE_DIR")
    if explicit:
        return Path(explicit).resolve()
    base = _user_cache()
    digest = hashlib.sha256(str(repo.resolve()).encode()).hexdigest()[:10]
    return base / "trainspec" / f"{repo.resolve().name}-{digest}"


def _user_cache() -> Path:
    """XDG_CACHE_HOME when it is an absolute path (the XDG rule), else ~/.cache; without a home, the temp folder."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg)
    try:
        return Path.home() / ".cache"
    except RuntimeError:
        return Path(tempfile.gettempdir()) / f"cache-{os.getuid()}"


def default_run_dir(repo: Path) -> Path:
    """A fresh run directory under the cache, named by time so runs sort in order."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return cache_root(repo) / "runs" / f"{stamp}-{os.getpid()}"


class DurationCache:
    """Seconds each spec last took, by spec id, shared by every run of one repository.

    A damaged cache (garbage, a folder in its place) never fails a run or a plan: it reads
    as empty with one KeptFileWarning warning, and the next record replaces it (or, for a
    folder, warns that the durations were not saved).
    """

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, float]:
        data = read_json(self.path, "duration cache") or {}
        return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0}

    def record(self, durations: dict[str, float]) -> None:
        if not durations:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.path) + ".lock"), warnings.catch_warnings():
                warnings.simplefilter("ignore", KeptFileWarning)  # said once by the run's load(); this write replaces the file
                merged = {**self.load(), **durations}
                atomic_write_text(self.path, json.dumps(merged, indent=1, sort_keys=True))
        except OSError as error:
            warnings.warn(f"{self.path}: durations not saved ({type(error).__name__}: {error})", KeptFileWarning, stacklevel=2)


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
    order: str = ""
    simulated: float = 0.0

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


def simulate(jobs: list[tuple[int, float]], devices: int) -> float:
    """Makespan of `jobs` (devices, seconds), served in this order by the pool's rule.

    The rule is the one `leases.py` applies: start waiters in order while they fit; the
    first that does not fit reserves the time its devices free up, and a later waiter may
    go first only if it ends by then. At most `devices` runs at once (one per worker).
    """
    slots = max(devices, 1)
    now, free = 0.0, devices
    running: list[tuple[float, int]] = []
    pending = list(jobs)
    zero_device = any(k == 0 for k, _ in pending)
    while pending or running:
        kept: list[tuple[int, float]] = []
        reserved: float | None = None
        for index, (k, seconds) in enumerate(pending):
            if len(running) >= slots or (free == 0 and not zero_device):
                kept += pending[index:]
                break
            fits = k <= free and (reserved is None or now + seconds <= reserved)
            if fits:
                heapq.heappush(running, (now + seconds, k))
                free -= k
                continue
            kept.append((k, seconds))
            if reserved is None:
                reserved = _free_by(running, k - free)
        pending = kept
        if not running:
            break
        end, k = heapq.heappop(running)
        now, free = end, free + k
        while running and running[0][0] == end:
            free += heapq.heappop(running)[1]
    return now


def _free_by(running: list[tuple[float, int]], missing: int) -> float:
    """When `missing` more devices will be free, as running jobs end."""
    released = 0
    for end, k in sorted(running):
        released += k
        if released >= missing:
            return end
    return float("inf")


ORDERS = {
    "longest first": lambda p: (-p.expected, -p.devices),
    "widest first": lambda p: (-p.devices, -p.expected),
    "largest area first": lambda p: (-max(p.devices, 1) * p.expected, -p.devices),
}


def make_plan(specs: list[Spec], inventory: Inventory, durations: dict[str, float], tier: str | None = None) -> Plan:
    """Order the runnable specs by whichever rule the simulation expects to finish first.

    Longest-first keeps the tail short; widest-first avoids draining devices for a wide spec
    in the middle of the run. Which wins depends on the mix, so each is simulated.
    """
    planned = []
    for spec in specs:
        if not in_tier(spec, tier):
            continue
        recorded = spec.id in durations
        expected = durations[spec.id] if recorded else spec.timeout
        planned.append(Planned(spec, spec.gpus, expected, recorded, skip_reason(spec, inventory)))
    runnable = [p for p in planned if p.skip is None]
    best_name, best, best_span = "", runnable, float("inf")
    for name, key in ORDERS.items():
        order = sorted(runnable, key=lambda p: (*key(p), p.spec.id))
        span = simulate([(p.devices, p.expected) for p in order], inventory.count)
        if span < best_span - 1e-9:
            best_name, best, best_span = name, order, span
    runs = [Planned(p.spec, p.devices, p.expected, p.recorded, None, i) for i, p in enumerate(best)]
    return Plan(inventory, runs, [p for p in planned if p.skip is not None], best_name, best_span if runs else 0.0)
