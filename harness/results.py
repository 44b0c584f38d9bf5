"""One record per spec, and the run's `results.json` that gathers them.

Each worker writes its spec's record next to that spec's outputs as soon as the spec
ends, so nothing is lost if the run is cut short; the controller gathers them into
`results.json` at the end (and whatever ran, when it is interrupted).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import importlib.util
import json
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .files import atomic_write_text

Outcome = Literal["passed", "failed", "skipped", "error"]
RECORD_NAME = "result.json"
MAX_CURVE_POINTS = 2000


@dataclass
class SpecResult:
    id: str
    outcome: Outcome
    reason: str = ""
    file: str = ""
    tier: str = ""
    duration: float = 0.0
    start_time: float = 0.0
    devices: list[str] = field(default_factory=list)
    device_kind: str = ""
    placement: str = ""
    lease_wait: float = 0.0
    final_loss: float | None = None
    steps_logged: int = 0
    perplexity: float | None = None
    inference: list[dict] = field(default_factory=list)
    output_dir: str = ""
    command: list[str] = field(default_factory=list)
    exit_code: int | None = None
    checks: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)
    loss_curve: list[list[float | None]] = field(default_factory=list)
    versions: dict[str, str | None] = field(default_factory=dict)
    child_versions: dict[str, str | None] = field(default_factory=dict)
    stderr_tail: str = ""
    regressions: list[dict] = field(default_factory=list)
    attempts: list[dict] = field(default_factory=list)
    flaky: bool = False
    started_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SpecResult":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def write(self, output_dir: Path) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        _write_json(output_dir / RECORD_NAME, self.to_json())


def thin_curve(points: list[tuple[float | None, float | None]]) -> list[list[float | None]]:
    """At most MAX_CURVE_POINTS points, always keeping the last, so records stay small."""
    step = max(1, -(-len(points) // MAX_CURVE_POINTS))
    kept = points[::step]
    if points and kept[-1] is not points[-1]:
        kept.append(points[-1])
    return [[s, None if v is None or v != v or v in (float("inf"), float("-inf")) else v] for s, v in kept]


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False, default=str) + "\n")


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_cuda() -> str | None:
    """torch's CUDA build, read from torch/version.py without importing torch."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text()
    except OSError:
        return None
    match = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return match.group(1) if match else None


def environment_versions() -> dict[str, str | None]:
    """Versions installed in the environment the runs use (no import of torch)."""
    return {
        "python": platform.python_version(),
        "torch": _package_version("torch"),
        "transformers": _package_version("transformers"),
        "cuda": _torch_cuda(),
    }


def read_child_versions(path: Path) -> dict[str, str | None]:
    """What the child recorded it imported (harness/child_site); empty when it imported neither library."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {key: data.get(key) for key in ("python", "torch", "transformers", "cuda")} if isinstance(data, dict) else {}


def gather(run_dir: Path) -> list[SpecResult]:
    """Every per-spec record under the run directory, in id order."""
    records = []
    for path in sorted(run_dir.glob(f"specs/*/{RECORD_NAME}")):
        try:
            records.append(SpecResult.from_json(json.loads(path.read_text())))
        except (OSError, json.JSONDecodeError, TypeError):
            continue
    return sorted(records, key=lambda r: r.id)


def write_results(run_dir: Path, results: list[SpecResult], meta: dict[str, Any]) -> Path:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    document = {
        "format": "trainspec-results/1",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run_dir),
        **meta,
        "summary": counts,
        "specs": [r.to_json() for r in results],
    }
    path = run_dir / "results.json"
    _write_json(path, document)
    return path


def load_results(path: Path) -> dict[str, Any]:
    """A results.json (or the one in a run directory), checked to be ours."""
    path = path / "results.json" if path.is_dir() else path
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("format") != "trainspec-results/1":
        raise ValueError(f"{path} is not a trainspec results.json")
    return data
