"""Curves that must agree: a spec with another (`parity`), a spec's repeats (`reproducible`), a stage
with an earlier one (a stage's `parity`).

The comparison is step by step over the steps both curves logged, with numpy's `isclose` rule
(|value - other| <= atol + rtol * |other|), and names the first step that differs, both values
and the tolerance. A comparison that cannot be made (a partner that did not run, was skipped or
failed, or logged no step in common) is a failure with its reason, never a pass.

Specs are compared where every record arrives (the controller): `Comparisons` collects what the
specs declare as their records come in and makes each comparison once all of its sides have.
The curves are read again from the training logs, whole: the record's curves are thinned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from harness.checks.after_run import CheckResult, failure_reason
from harness.logs.formats import LogError, parse_log
from harness.records import SpecResult
from harness.spec.compared import repeat_ids
from harness.spec.model import Spec
from harness.spec.parity import CurveTolerance, StageParitySpec
from harness.spec.sections import LogSpec

Points = Iterable[tuple[float | None, float | None]]
Kind = Literal["parity", "reproducible", "stage parity"]


@dataclass
class Comparison:
    """One comparison of `spec`'s curve with `partner`'s, as results.json keeps it (`parity` of both records)."""

    kind: Kind
    spec: str
    partner: str
    metric: str
    rtol: float
    atol: float
    steps: str
    # passed, failed, or "not compared" (the declaring spec itself did not pass: its own failure stands).
    status: str = "failed"
    steps_compared: int = 0
    first_step: float | None = None
    last_step: float | None = None
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    first_failing_step: float | None = None
    value: float | None = None
    partner_value: float | None = None
    reason: str = ""

    @property
    def name(self) -> str:
        return f"{self.kind.split()[-1]}:{self.partner}"

    def check(self) -> CheckResult:
        expected = f"{self.metric} equal to {self.partner}'s at {self.steps} (rtol {self.rtol:g}, atol {self.atol:g})"
        return CheckResult(self.name, self.status == "passed", expected, self.found())

    def found(self) -> str:
        if self.reason:
            return self.reason
        if self.first_failing_step is not None:
            allowed = self.atol + self.rtol * abs(self.partner_value or 0.0)
            return (
                f"step {self.first_failing_step:g} differs: {self.spec} {_value(self.value)} vs {self.partner}"
                f" {_value(self.partner_value)} (|difference| {_short(_diff(self.value, self.partner_value))}"
                f" > {allowed:.3g}); {self.steps_compared} common steps compared, largest difference"
                f" {self.max_abs_diff:.3g}"
            )
        return (
            f"{self.steps_compared} common steps (from {self.first_step:g} to {self.last_step:g}) agree;"
            f" largest difference {self.max_abs_diff:.3g} ({self.max_rel_diff:.3g} relative)"
        )

    def as_dict(self) -> dict[str, Any]:
        # JSON has no infinity: a relative difference against a zero is unbounded, said as null.
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in self.__dict__.items()}


def _value(value: float | None) -> str:
    return "missing" if value is None else repr(value)


def _short(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _diff(a: float | None, b: float | None) -> float | None:
    return abs(a - b) if a is not None and b is not None and math.isfinite(a) and math.isfinite(b) else None


def by_step(points: Points) -> dict[float, float | None]:
    """Step -> value; a step logged twice keeps its last value (a rewritten record)."""
    return {step: value for step, value in points if step is not None}


def _logged(steps: list[float]) -> str:
    return f"steps {min(steps):g} to {max(steps):g}" if steps else "no step"


def compare_curves(base: Comparison, mine: Points, theirs: Points, tolerance: CurveTolerance) -> Comparison:
    """`base` filled in from comparing `mine` with `theirs` (the partner's) at the common steps of the window."""
    a, b = by_step(mine), by_step(theirs)
    common = sorted(set(a) & set(b))
    if isinstance(tolerance.steps, list):
        low, high = tolerance.steps
        common = [s for s in common if low <= s <= high]
    elif tolerance.steps == "final":
        common = common[-1:]
    if not common:
        within = f" within {tolerance.window}" if isinstance(tolerance.steps, list) else ""
        return replace(
            base,
            reason=f"no common step to compare{within}: {base.spec} logged {_logged(list(a))},"
            f" {base.partner} {_logged(list(b))}",
        )
    result = replace(base, steps_compared=len(common), first_step=common[0], last_step=common[-1])
    worst_abs = worst_rel = 0.0
    for step in common:
        x, y = a[step], b[step]
        diff = _diff(x, y)
        if diff is not None:
            worst_abs = max(worst_abs, diff)
            worst_rel = max(worst_rel, diff / abs(y) if y else 0.0 if diff == 0 else math.inf)
        if result.first_failing_step is None and (
            diff is None or diff > tolerance.atol + tolerance.rtol * abs(y or 0.0)
        ):
            result = replace(result, first_failing_step=step, value=x, partner_value=y)
    return replace(
        result,
        status="passed" if result.first_failing_step is None else "failed",
        max_abs_diff=worst_abs,
        max_rel_diff=worst_rel,
    )


def read_curve(path: Path, log: LogSpec, metric: str) -> list[tuple[float | None, float | None]]:
    """(step, value) of every training record of the log, whole; `loss` is the log's loss key."""
    spec = log if metric == "loss" else replace(log, loss_key=metric)
    return [(entry.step, entry.loss) for entry in parse_log(path, spec).entries]


def log_spec_of(spec: Spec) -> LogSpec:
    """How the log a record names (its last stage's) is read."""
    return (spec.stages[-1].log or spec.log) if spec.stages else spec.log


def stage_parity(
    stage: str, parity: StageParitySpec, mine: tuple[Path | None, LogSpec], theirs: tuple[Path | None, LogSpec]
) -> Comparison:
    """A stage's curve against an earlier stage's, each given as (its log file, how to read it)."""
    base = Comparison("stage parity", stage, parity.stage, parity.metric, parity.rtol, parity.atol, parity.window)
    if mine[0] is not None and mine[0] == theirs[0]:
        # The later stage rewrote the earlier one's log: comparing the file with itself would always pass.
        return replace(base, reason=f"stages {stage} and {parity.stage} logged into the same file {mine[0]}")
    curves = []
    for name, (path, log) in ((stage, mine), (parity.stage, theirs)):
        if path is None:
            return replace(base, reason=f"stage {name} left no training log to compare")
        try:
            curves.append(read_curve(path, log, parity.metric))
        except LogError as error:
            return replace(base, reason=f"cannot read stage {name}'s log {path}: {error}")
    return compare_curves(base, curves[0], curves[1], parity)


@dataclass(frozen=True)
class Declared:
    """A comparison a spec asks for: with another spec, or with one of its repeats."""

    kind: Kind
    spec: Spec
    partner: str
    tolerance: CurveTolerance

    def base(self) -> Comparison:
        t = self.tolerance
        return Comparison(self.kind, self.spec.id, self.partner, t.metric, t.rtol, t.atol, t.window)


def declared(spec: Spec) -> list[Declared]:
    found = [Declared("parity", spec, p.spec, p) for p in spec.parities]
    if spec.reproducible is not None:
        found += [Declared("reproducible", spec, other, spec.reproducible) for other in repeat_ids(spec)[1:]]
    return found


NOT_RUN = (
    "did not run in this run: it was not selected (a -k or -m expression, a node id, or a spec file not"
    " collected) or no spec has that id; select both sides of a comparison"
)


def judge(
    wanted: Declared, mine: SpecResult, theirs: SpecResult | None, spec_of: Callable[[str], Spec | None]
) -> Comparison:
    """The comparison `wanted` asks for, from the two records (None: the partner has none in this run)."""
    base = wanted.base()
    if mine.outcome != "passed":
        return replace(base, status="not compared", reason=f"not compared: {mine.id} itself {mine.outcome}")
    if theirs is None:
        return replace(base, reason=f"{wanted.partner} {NOT_RUN}")
    if theirs.outcome != "passed":
        said = {"skipped": "was skipped", "unchanged": "was reused as unchanged, not run"}.get(theirs.outcome, "failed")
        return replace(base, reason=f"{theirs.id} {said}: {theirs.reason or theirs.outcome}")
    curves = []
    for record in (mine, theirs):
        spec = spec_of(record.id)
        path = record.paths.get("log")
        if spec is None or not path:
            return replace(base, reason=f"{record.id} has no training log to compare")
        try:
            curves.append(read_curve(Path(path), log_spec_of(spec), wanted.tolerance.metric))
        except LogError as error:
            return replace(base, reason=f"cannot read {record.id}'s log {path}: {error}")
    return compare_curves(base, curves[0], curves[1], wanted.tolerance)


def apply(comparison: Comparison, records: dict[str, SpecResult]) -> bool:
    """Into the pair's records (both list it); a failed one fails the declaring spec. True when it failed."""
    for spec_id in dict.fromkeys((comparison.spec, comparison.partner)):
        if spec_id in records:
            records[spec_id].parity.append(comparison.as_dict())
    if comparison.status != "failed":
        return False
    record = records[comparison.spec]
    check = comparison.check()
    record.checks.append(check.as_dict())
    record.outcome = "failed"
    record.reason = failure_reason([check])
    # Two curves that disagree are numbers gone wrong: never retried, never an infrastructure failure.
    record.failure_kind = "numeric"
    record.failure_evidence = check.line()
    return True


@dataclass
class Comparisons:
    """The comparisons of one run, made as soon as every side's record has arrived."""

    spec_of: Callable[[str], Spec | None]
    pending: dict[tuple[str, str, str], Declared] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def arrived(self, record: SpecResult, records: dict[str, SpecResult]) -> list[Comparison]:
        """The comparisons that this record completes, made."""
        self._declare(record)
        ready = [k for k, w in self.pending.items() if w.spec.id in records and w.partner in records]
        return [self._make(key, records) for key in ready]

    def remaining(self, records: dict[str, SpecResult]) -> list[Comparison]:
        """At the end of the run: every comparison not made yet (a side never arrived)."""
        for record in list(records.values()):
            self._declare(record)
        return [self._make(key, records) for key in list(self.pending)]

    def _declare(self, record: SpecResult) -> None:
        if record.id in self.seen:
            return
        self.seen.add(record.id)
        spec = self.spec_of(record.id)
        for wanted in declared(spec) if spec is not None else ():
            self.pending[(wanted.kind, wanted.spec.id, wanted.partner)] = wanted

    def _make(self, key: tuple[str, str, str], records: dict[str, SpecResult]) -> Comparison:
        wanted = self.pending.pop(key)
        return judge(wanted, records[wanted.spec.id], records.get(wanted.partner), self.spec_of)
