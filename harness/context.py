"""What every spec of one run shares: where things go, which devices exist, the backend and the run's option values.

The run's one setup: `create` resolves and checks the run directory, makes the backend once,
asks it for the devices and opens the caches, for `plan` and `run` alike (the CLI hands the
context it made to the pytest plugin). The controller then hands it to each xdist worker as
plain data (`to_wire`/`from_wire`); nothing here knows of pytest.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import InitVar, asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import backends
from harness.caches import DurationCache, PeakMemoryCache, cache_root, default_run_dir
from harness.checks.baseline import BaselineError, load_baseline, parse_tolerances
from harness.devices.leases import run_pool
from harness.devices.memory import headroom_of
from harness.devices.visible import DeviceError, Inventory
from harness.inference.perplexity import DEFAULT_SCORER
from harness.records import SpecResult
from harness.repo_writes import run_dir_problem
from harness.rundir import RunDirError, claim
from harness.trace import environment_versions


class ContextError(Exception):
    """The run's options cannot make a run (bad usage: exit 2); the message is one line per problem."""


@dataclass
class RunContext:
    repo: Path
    run_dir: Path
    inventory: Inventory
    spec_roots: list[Path]
    # Every run option's value, by the option's name (harness.options and the backends' own).
    values: dict[str, Any] = field(default_factory=dict)
    # The backend `create` made already (a worker, given none, makes its own from the values).
    made: InitVar[backends.Backend | None] = None
    backend: backends.Backend = field(init=False)

    def __post_init__(self, made: backends.Backend | None) -> None:
        self.run_tag = run_tag_of(self.run_dir)
        self.headroom = headroom_of(self.values.get("gpu_headroom"))
        # The plan's workers, once planned (`first_wave`): the runs that start together.
        self.pool = run_pool(self.inventory, self.run_dir, self.headroom, self.run_tag, self.values.get("first_wave"))
        self.backend = made or backends.make(self.values.get("backend") or "local", self.values, self.run_tag)
        self.tolerances = parse_tolerances(self.values.get("tolerance") or [])
        self.versions = environment_versions()
        self.durations = DurationCache(cache_root(self.repo) / "durations.json")
        self.peaks = PeakMemoryCache(cache_root(self.repo) / "peak_memory.json")

    @functools.cached_property
    def recorded_peaks(self) -> dict[str, float]:
        """Peak memory of earlier runs, read once per process: only the controller writes it, when the run ends."""
        return self.peaks.load()

    @functools.cached_property
    def baseline_records(self) -> dict[str, SpecResult]:
        """The `--baseline` run's records by spec id, read and checked once per process (none without a baseline)."""
        return load_baseline(self.baseline) if self.baseline else {}

    @property
    def tier(self) -> str | None:
        return self.values.get("tier")

    @property
    def scorer(self) -> str:
        return self.values.get("scorer") or DEFAULT_SCORER

    @property
    def missing_scorer(self) -> str:
        return self.values.get("missing_scorer") or "fail"

    @property
    def baseline(self) -> str | None:
        return self.values.get("baseline")

    def planned(self, workers: int) -> None:
        """The plan's worker count: the first items of that many workers start together (the first wave)."""
        self.values["first_wave"] = max(1, workers)
        self.pool.first_wave = max(1, workers)

    def output_dir(self, spec_id: str) -> Path:
        """Where a spec's outputs and record go (results.gather reads specs/*/)."""
        return self.run_dir / "specs" / spec_id

    @property
    def interrupted_marker(self) -> Path:
        """Put down by the controller when the run is interrupted, before it ends what still runs."""
        return self.run_dir / ".interrupted"

    @property
    def groups_dir(self) -> Path:
        """One file per running process group of this run (`process.track_groups`): what the controller ends last."""
        return self.run_dir / "groups"

    def to_wire(self) -> dict[str, Any]:
        return {
            "repo": str(self.repo),
            "run_dir": str(self.run_dir),
            "inventory": asdict(self.inventory),
            "spec_roots": [str(p) for p in self.spec_roots],
            "values": self.values,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> RunContext:
        inventory = Inventory.from_dict(data["inventory"])
        return cls(
            Path(data["repo"]), Path(data["run_dir"]), inventory, [Path(p) for p in data["spec_roots"]], data["values"]
        )


def run_tag_of(run_dir: Path) -> str:
    """The same on every worker, so the controller can find (and cancel) the run's work with its backend."""
    return hashlib.sha1(str(run_dir).encode()).hexdigest()[:8]


def create(values: dict[str, Any], repo: Path, spec_roots: list[Path], *, for_run: bool = True) -> RunContext:
    """The run's context from its option values: run dir resolved, backend made (once) and its devices
    found, baseline and tolerances checked; `for_run`, also the backend available and the run dir
    checked and claimed (`plan` needs neither)."""
    values = dict(values)
    run_dir = Path(values.get("run_dir") or default_run_dir(repo)).resolve()
    try:
        backend = backends.make(values.get("backend") or "local", values, run_tag_of(run_dir))
        if for_run:
            backend.check_available()
        inventory = backend.inventory(values)
        parse_tolerances(values.get("tolerance") or [])
        headroom_of(values.get("gpu_headroom"))
        if values.get("baseline"):
            values["baseline"] = str(Path(values["baseline"]).resolve())
            load_baseline(values["baseline"])
    except (backends.BackendError, DeviceError, ValueError, BaselineError) as error:
        raise ContextError(str(error)) from None
    values["scorer"] = values.get("scorer") or os.environ.get("TRAINSPEC_SCORER") or DEFAULT_SCORER
    if for_run:
        if problem := run_dir_problem(run_dir, repo):
            raise ContextError(problem)
        values["run_dir"] = str(run_dir)
        try:
            claim(run_dir)
        except RunDirError as error:
            raise ContextError(str(error)) from None
        # After the claim: simulated devices lease inside the run directory, whose own problem comes first.
        if problem := run_pool(inventory, run_dir, 0.0, "").problem():
            raise ContextError(problem)
    return RunContext(repo, run_dir, inventory, spec_roots, values, backend)
