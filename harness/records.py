"""One record per spec, and the run's `results.json` that gathers them.

Each worker writes its spec's record next to that spec's outputs as soon as the spec
ends, so nothing is lost if the run is cut short; the controller gathers them into
`results.json` at the end (and whatever ran, when it is interrupted).

The dataclasses below are the one schema of both: every reader (the reports, the
baseline comparison) goes through `RunDocument.from_json`, which checks each field
against its annotation, so a hand-edited or foreign file fails once, naming the file
and the field, instead of deep inside a renderer.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import stat
import types
import typing
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict

from harness.atomic import atomic_write_text
from harness.spec.model import FailureKind

if TYPE_CHECKING:
    from harness.logs.formats import TrainingLog

# unchanged: not run because it passed before with the same fingerprint (--skip-unchanged).
Outcome = Literal["passed", "failed", "skipped", "error", "unchanged"]
Severity = Literal["fail", "warn", "info"]
RECORD_NAME = "result.json"
FORMAT = "trainspec-results/1"
# No run writes a record this large: a bound for reading what a user points at (`--baseline`, `report`).
MAX_RECORDS_BYTES = 256 << 20
MAX_CURVE_POINTS = 2000
MAX_METRICS = 12
# Keys of a training record that are not metrics of their own: the axis, and the loss that
# already has its own curve.
NOT_METRICS = frozenset({"step", "global_step", "epoch", "loss"})


def _number_or_none(value: object) -> bool:
    # type() rather than isinstance: a bool is an int, and no step or loss.
    return value is None or (type(value) in (int, float) and math.isfinite(value))  # type: ignore[arg-type]


def _curve(value: object, where: str) -> list[list[float | None]] | None:
    """A whole curve checked in one pass, as records hold thousands of points; None sends a bad one
    through the general check, which names the point and what is wrong with it."""
    if isinstance(value, list) and all(
        type(p) is list and len(p) == 2 and _number_or_none(p[0]) and _number_or_none(p[1]) for p in value
    ):
        return value
    if (
        isinstance(value, list)
        and (bad := next((i for i, p in enumerate(value) if isinstance(p, (list, tuple)) and len(p) != 2), None))
        is not None
    ):
        raise ValueError(f"{where}[{bad}]: expected [step, value], found {json.dumps(value[bad])}")
    return None


# [[step, value], ...]; None where the step or the value was missing or not finite.
Curve = Annotated[list[list[float | None]], _curve]


class _CheckCore(TypedDict):
    name: str
    passed: bool
    expected: str
    found: str
    severity: Severity


class CheckRecord(_CheckCore, total=False):
    """One check as results.json keeps it; `cause` and `notes` only where a check carries them (records of older runs
    lack both)."""

    cause: str | None
    notes: list[str]


class _RegressionCore(TypedDict):
    metric: str
    baseline: float
    current: float | None
    tolerance: float
    severity: Severity


class Regression(_RegressionCore, total=False):
    """A metric past its tolerance; `step` only for the loss curve, `current` None where the run lacks that step."""

    # (total=False rather than NotRequired: the latter is lost under postponed annotations on 3.11.)
    tolerance_abs: float
    step: float | None


class InferenceRecord(TypedDict):
    prompt: str
    text: str
    perplexity: float | None


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
    # MiB the run's processes used at most on each of its devices (sampled on real NVIDIA GPUs only).
    peak_gpu_memory: dict[str, int] = field(default_factory=dict)
    final_loss: float | None = None
    steps_logged: int = 0
    perplexity: float | None = None
    inference: list[InferenceRecord] = field(default_factory=list)
    output_dir: str = ""
    command: list[str] = field(default_factory=list)
    exit_code: int | None = None
    failure_kind: FailureKind | None = None
    # The line that decided the kind (a stderr line, the exit signal, a failed check), for a person to verify.
    failure_evidence: str = ""
    checks: list[CheckRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)
    loss_curve: Curve = field(default_factory=list)
    # Other numbers the training log carried (grad norm, learning rate, throughput) by key.
    metric_curves: dict[str, Curve] = field(default_factory=dict)
    # The baseline run's loss curve of this spec, kept so the report can overlay it.
    baseline_curve: Curve = field(default_factory=list)
    versions: dict[str, str | None] = field(default_factory=dict)
    child_versions: dict[str, str | None] = field(default_factory=dict)
    stderr_tail: str = ""
    regressions: list[Regression] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # A spec in stages: one summary per stage in order (id, outcome, exit code, steps, losses, files, curves, the
    # step an interrupt stopped it at), those not run included.
    stages: list[dict[str, Any]] = field(default_factory=list)
    # [min, max] its checks hold the final loss ("loss") and each bounded metric to, drawn on their charts.
    bounds: dict[str, list[float | None]] = field(default_factory=dict)
    # Curves compared with another spec's or a repeat's (harness.checks.parity.Comparison), on both sides' records.
    parity: list[dict[str, Any]] = field(default_factory=list)
    flaky: bool = False
    started_at: str = ""
    # Repository-relative path -> content hash of every file the run used (harness.trace).
    dependencies: dict[str, str] = field(default_factory=dict)
    # What --skip-unchanged keys a pass by (harness.planning.selection.fingerprint); "" where nothing says what
    # the run read. The run history tells flaky specs by it.
    fingerprint: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object, where: str = "record") -> SpecResult:
        """Checked against the annotations; ValueError names the field (`where` prefixes it)."""
        if isinstance(data, dict) and data.get("outcome") is None:
            # A record without an outcome is a run that broke before deciding.
            data = {**data, "outcome": "error"}
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            where = f"{where} (spec {data['id']!r})"
        return _build(cls, data, where)

    def write(self, output_dir: Path) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        _write_json(output_dir / RECORD_NAME, self.to_json())


@dataclass
class RunDocument:
    """A results.json read back: the run's facts, its records, and the keys this version does not know."""

    specs: list[SpecResult] = field(default_factory=list)
    format: str = FORMAT
    created: str = ""
    run_dir: str = ""
    tier: str | None = None
    backend: str = ""
    versions: dict[str, str | None] = field(default_factory=dict)
    devices: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    summary: dict[str, int] = field(default_factory=dict)
    # How well the run scheduled: makespan_s, plan_expected_s, lower_bound_s, idle_device_s.
    schedule: dict[str, float] = field(default_factory=dict)
    other: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: object, source: str) -> RunDocument:
        """ValueError naming `source` (the file) and the field when `data` is not a results document."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{source} is not a trainspec results.json")
        try:
            specs = data.get("specs", [])
            if not isinstance(specs, list):
                raise ValueError(f"specs: expected a list of spec records, found {_kind(specs)}")
            document = _build(cls, {k: v for k, v in data.items() if k != "specs"}, "", rest="other")
            document.specs = [SpecResult.from_json(spec, f"specs[{i}]") for i, spec in enumerate(specs)]
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
        return document

    def to_json(self) -> dict[str, Any]:
        skip = {"specs", "other"} | (set() if self.schedule else {"schedule"})  # none written: none read back
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        return {**data, **self.other, "specs": [spec.to_json() for spec in self.specs]}

    def write(self, path: Path) -> None:
        """Replace `path` (a results.json) with this document, atomically."""
        _write_json(path, self.to_json())


# ---------------------------------------------------------------- checking JSON against the annotations


def _kind(value: object) -> str:
    """The value as the JSON file spells it, cut short."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:59] + "…"


def _expected(hint: Any) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        dict: "an object",
        list: "a list",
    }
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    return names.get(typing.get_origin(hint) or hint, "an object" if typing.is_typeddict(hint) else str(hint))


def _check(value: object, hint: Any, where: str) -> Any:
    """`value` as `hint` describes it (ints widened to floats), or ValueError naming `where`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin is Annotated:
        # The metadata is a faster check of the whole value; None: let the general one find the fault.
        checked = args[1](value, where)
        return _check(value, args[0], where) if checked is None else checked
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:
            try:
                return _check(value, option, where)
            except ValueError:
                continue
        return _check(value, options[-1], where)
    if origin is Literal:
        if value in args and isinstance(value, str):
            return value
    elif origin is list or hint is list:
        # A tuple is what JSON would write as a list (records built in memory may hold them).
        if isinstance(value, (list, tuple)):
            return [_check(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)] if args else value
    elif origin is dict or hint is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {k: _check(v, args[1], f"{where}.{k}") for k, v in value.items()} if args else value
    elif typing.is_typeddict(hint):
        if isinstance(value, dict):
            hints = typing.get_type_hints(hint)
            if missing := [k for k in hint.__required_keys__ if k not in value]:
                raise ValueError(f"{where}: lacks {', '.join(sorted(missing))}")
            return {**value, **{k: _check(value[k], hints[k], f"{where}.{k}") for k in hints if k in value}}
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError(f"{where}: expected a finite number, found {_kind(value)}")
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, hint):
        return value
    raise ValueError(f"{where}: expected {_expected(hint)}, found {_kind(value)}")


def _build(cls: Any, data: object, where: str, rest: str | None = None) -> Any:
    """A dataclass from a JSON object: known keys checked, missing ones defaulted, others in `rest` (else dropped)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'the document'}: expected an object, found {_kind(data)}")
    hints = typing.get_type_hints(cls, include_extras=True)
    values: dict[str, Any] = {}
    for f in fields(cls):
        path = f"{where}.{f.name}" if where else f.name
        if f.name in data and f.name != rest:
            values[f.name] = _check(data[f.name], hints[f.name], path)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ValueError(f"{path}: missing")
    if rest:
        values[rest] = {k: v for k, v in data.items() if k not in values}
    return cls(**values)


# ---------------------------------------------------------------- curves


def thin_curve(
    points: typing.Sequence[typing.Sequence[float | None]], limit: int = MAX_CURVE_POINTS
) -> list[list[float | None]]:
    """At most `limit` points, always keeping the last, so records stay small."""
    step = max(1, -(-len(points) // limit))
    kept = list(points[::step])
    if points and kept[-1] is not points[-1]:
        kept.append(points[-1])
    return [[s, None if v is None or v != v or v in (float("inf"), float("-inf")) else v] for s, v in kept]


def metric_curves(log: TrainingLog, skip: Iterable[str] = ()) -> dict[str, list[list[float | None]]]:
    """The other numbers the training steps logged (grad norm, learning rate, throughput), one thinned curve per key.

    `skip` names keys that are not metrics in this log (its loss and step keys when renamed).
    At most MAX_METRICS keys, in the order they first appear, so a chatty logger cannot bloat the record.
    """
    skipped = NOT_METRICS | set(skip)
    kept = [(name, points) for name, points in log.series().items() if name not in skipped]
    return {name: thin_curve(points) for name, points in kept[:MAX_METRICS]}


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False, default=str) + "\n")


def gather(run_dir: Path) -> list[SpecResult]:
    """Every per-spec record under the run directory, in id order."""
    records = []
    for path in sorted(run_dir.glob(f"specs/*/{RECORD_NAME}")):
        try:
            records.append(SpecResult.from_json(json.loads(read_regular(path)), str(path)))
        except (OSError, ValueError):
            continue
    return sorted(records, key=lambda r: r.id)


def write_results(run_dir: Path, results: list[SpecResult], meta: dict[str, Any]) -> Path:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    document = {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "run_dir": str(run_dir),
        **meta,
        "summary": counts,
        "specs": [r.to_json() for r in results],
    }
    path = run_dir / "results.json"
    _write_json(path, document)
    return path


def read_regular(path: Path, limit: int = MAX_RECORDS_BYTES) -> str:
    """The text of a regular file of at most `limit` bytes; ValueError naming it otherwise. A device such as
    /dev/zero would be read without end and a FIFO would block, so neither is opened."""
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a file"
        )
        raise ValueError(f"{path} is not a regular file ({kind})")
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path} is larger than {limit >> 20} MiB, more than any record of a run")
    return data.decode("utf-8", errors="replace")


def load_document(path: Path) -> RunDocument:
    """A results.json (or the one in a run directory) as typed records; ValueError naming the file and field."""
    path = path / "results.json" if path.is_dir() else path
    try:
        data = json.loads(read_regular(path))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON: {error}") from None
    return RunDocument.from_json(data, str(path))


def load_results(path: Path) -> dict[str, Any]:
    """The same, as the plain JSON object (checked and normalised: ints widened where the schema says float)."""
    return load_document(path).to_json()
