"""Regressions against a stored run: `run --baseline PATH` compares each spec with its record there.

A spec's `baseline` block sets how much its final loss, perplexity and duration may grow
(as fractions of the baseline's values, and in absolute terms as `<metric>_abs`: within either
passes), how closely its loss curve must follow the baseline's step by step, and whether
growth past that fails the spec or warns; `--tolerance NAME=VALUE` on the command line
overrides the spec for every spec. `recommend` turns repeated runs of the same specs into
tolerances that their own noise would pass.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from pathlib import Path

from harness.checks.after_run import CheckResult
from harness.records import Regression, RunDocument, SpecResult, load_document
from harness.report.summary import table
from harness.spec.sections import BaselineSpec

METRICS = ("final_loss", "perplexity", "duration")
CURVE = "loss_curve"
TOLERANCES = (*(name for metric in (*METRICS, "curve") for name in (metric, f"{metric}_abs")), "curve_fraction")
# Recommended tolerances are this many times the spread seen, and at least the floor: a few
# runs rarely show the worst of the noise.
MARGIN, FLOOR = 2.0, 0.01


class BaselineError(Exception):
    """The baseline file cannot be used; the message names it and why."""


@functools.lru_cache(maxsize=2)
def load_baseline(path: str) -> dict[str, SpecResult]:
    """The baseline's records by spec id (read once per process)."""
    try:
        return {record.id: record for record in load_document(Path(path)).specs}
    except OSError as error:
        raise BaselineError(f"--baseline {path}: {error.strerror}") from None
    except ValueError as error:
        # The message names the file read (a run directory's results.json) and the field.
        raise BaselineError(f"--baseline {error}") from None


def parse_tolerances(values: list[str]) -> dict[str, float]:
    """`NAME=VALUE` strings from the command line (names as in a spec's `baseline` block), checked."""
    tolerances = {}
    for value in values:
        name, _, number = value.partition("=")
        if name not in TOLERANCES:
            raise ValueError(f"--tolerance {value!r}: the name must be one of {', '.join(TOLERANCES)}")
        try:
            tolerances[name] = float(number)
        except ValueError:
            raise ValueError(
                f"--tolerance {value!r}: expected NAME=VALUE, e.g. final_loss=0.1 or final_loss_abs=0.002"
            ) from None
        if not math.isfinite(tolerances[name]) or tolerances[name] < 0:
            raise ValueError(f"--tolerance {value!r}: a tolerance is a finite number of at least 0")
        if name == "curve_fraction" and tolerances[name] > 1:
            raise ValueError(f"--tolerance {value!r}: curve_fraction is a fraction of the steps, at most 1")
    return tolerances


def compare(
    record: SpecResult, baseline: SpecResult | None, spec: BaselineSpec, overrides: Mapping[str, float]
) -> tuple[list[CheckResult], list[Regression]]:
    """Checks named `baseline.<metric>` and the regressions they found, for the report."""
    if baseline is None:
        return [
            CheckResult(
                "baseline",
                False,
                "a record of this spec in the baseline",
                "none: a new spec, nothing to compare",
                "warn",
            )
        ], []
    settings = dataclasses.replace(spec, **overrides)  # type: ignore[arg-type]
    checks, regressions = [], []
    for metric in METRICS:
        then, now = getattr(baseline, metric), getattr(record, metric)
        if then is None or now is None or (metric == "duration" and not then):
            continue
        relative, absolute = getattr(settings, metric), getattr(settings, f"{metric}_abs")
        limit = _limit(then, relative, absolute)
        severity = settings.duration_severity if metric == "duration" else settings.severity
        passed = now <= limit
        allowed = f"{relative:.0%}" + (f" or {absolute:.4g}" if absolute else "")
        checks.append(
            CheckResult(
                f"baseline.{metric}",
                passed,
                f"at most {limit:.4g} (baseline {then:.4g} + {allowed})",
                f"{now:.4g}",
                severity,
            )
        )
        if not passed:
            regression: Regression = {
                "metric": metric,
                "baseline": then,
                "current": now,
                "tolerance": relative,
                "severity": severity,
            }
            if absolute:
                regression["tolerance_abs"] = absolute
            regressions.append(regression)
    if found := _compare_curve(record.loss_curve, baseline.loss_curve, settings):
        checks.append(found[0])
        regressions += [found[1]] if found[1] else []
    return checks, regressions


def _limit(then: float, relative: float, absolute: float) -> float:
    # |then| keeps a negative baseline's allowance pointing up.
    return max(then + abs(then) * relative, then + absolute)


def _compare_curve(
    now: list[list[float | None]], then: list[list[float | None]], settings: BaselineSpec
) -> tuple[CheckResult, Regression | None] | None:
    """`baseline.loss_curve`: each step with a finite loss in the baseline, against the run's loss at that step.

    A step above both tolerances, or absent or not finite in the run, departs; more than
    `curve_fraction` of the steps departing is a regression, named by the first of them.
    None when the baseline has no curve to follow.
    """
    expected = [(step, value) for step, value in then if step is not None and value is not None]
    if not expected:
        return None
    found = {step: value for step, value in now if step is not None}
    departed = []
    for step, value in expected:
        current = found.get(step)
        if current is None or current > _limit(value, settings.curve, settings.curve_abs):
            departed.append((step, value, current))
    allowed = f"{settings.curve:.0%}" + (f" or {settings.curve_abs:.4g}" if settings.curve_abs else "")
    want = f"at most {settings.curve_fraction:.0%} of the baseline's {len(expected)} steps above its loss + {allowed}"
    if not departed:
        return CheckResult(f"baseline.{CURVE}", True, want, "every step within"), None
    step, value, current = departed[0]
    at = f"{current:.4g}" if current is not None else "no finite loss"
    seen = (
        f"{len(departed)} steps ({len(departed) / len(expected):.1%}) above or missing, the first at step "
        f"{step:.6g}: {at} against the baseline's {value:.4g} (allowed +{allowed})"
    )
    passed = len(departed) <= settings.curve_fraction * len(expected)
    check = CheckResult(f"baseline.{CURVE}", passed, want, seen, settings.severity)
    if passed:
        return check, None
    regression: Regression = {
        "metric": CURVE,
        "baseline": value,
        "current": current,
        "tolerance": settings.curve,
        "severity": settings.severity,
        "step": step,
    }
    if settings.curve_abs:
        regression["tolerance_abs"] = settings.curve_abs
    return check, regression


# ---------------------------------------------------------------- recommending tolerances


def _round_up(value: float) -> float:
    """Up to two significant digits, so a recommendation is never below what was seen."""
    if value <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return math.ceil(value / scale - 1e-9) * scale


def _spread(metric: str, values: list[float], unit: str = "") -> tuple[str, str]:
    """What was seen and the tolerance that would have passed it twice over: relative when every value is positive, else
    absolute."""
    low, high = min(values), max(values)
    seen = f"{low:.4g}..{high:.4g}{unit}"
    if low > 0:
        relative = high / low - 1
        return f"{seen} (spread {relative:.1%})", f"{metric}: {max(FLOOR, _round_up(MARGIN * relative)):.2g}"
    return f"{seen} (spread {high - low:.3g}{unit})", f"{metric}_abs: {_round_up(MARGIN * (high - low)):.2g}"


def _curve_spread(curves: list[list[list[float | None]]], fraction: float) -> tuple[str, str] | None:
    """The rise of one run's loss over another's at their common steps, every ordered pair: the part
    of it that `fraction` of the steps may exceed, at its worst over the pairs."""
    finite = [{s: v for s, v in curve if s is not None and v is not None and v > 0} for curve in curves]
    worst, largest, common = 0.0, 0.0, 0
    for then in finite:
        for now in finite:
            if now is then or not (steps := sorted(then.keys() & now.keys())):
                continue
            rises = sorted(max(0.0, now[s] / then[s] - 1) for s in steps)
            # The smallest tolerance leaving at most `fraction` of the steps outside it.
            worst = max(worst, rises[min(len(rises) - 1, math.ceil(len(rises) * (1 - fraction)) - 1)])
            largest, common = max(largest, rises[-1]), max(common, len(steps))
    if not common:
        return None
    seen = f"{common} common steps; {1 - fraction:.0%} of them within {worst:.1%} (the largest rise {largest:.1%})"
    return seen, f"curve: {max(FLOOR, _round_up(MARGIN * worst)):.2g}"


def recommend(documents: list[RunDocument]) -> list[str]:
    """For each spec that passed in two or more of the runs: the spread of its final loss, duration
    and loss curve across them, and the `baseline:` tolerances that would pass that spread twice over."""
    passed: dict[str, list[SpecResult]] = {}
    for document in documents:
        for record in document.specs:
            passed.setdefault(record.id, []).extend([record] if record.outcome == "passed" else [])
    default = BaselineSpec()
    rows = [("spec", "runs", "metric", "seen", "recommended")]
    notes = []
    for spec_id, records in passed.items():
        if len(records) < 2:
            notes.append(f"{spec_id}: passed in {len(records)} of the runs; at least 2 are needed to see its noise")
            continue
        losses, durations = (
            [r.final_loss for r in records if r.final_loss is not None],
            [r.duration for r in records if r.duration],
        )
        seen = {
            "final_loss": _spread("final_loss", losses) if len(losses) > 1 else None,
            "duration": _spread("duration", durations, " s") if len(durations) > 1 else None,
            "curve": _curve_spread([r.loss_curve for r in records], default.curve_fraction),
        }
        rows += [(spec_id, str(len(records)), metric, *found) for metric, found in seen.items() if found]
    lines = table(rows) if len(rows) > 1 else []
    if len(rows) > 1:
        lines += [
            "",
            f"recommended: {MARGIN:g}x the spread seen, at least {FLOOR:g}; curve at curve_fraction "
            f"{default.curve_fraction:g}. "
            "Put them in each spec's baseline: block, or pass --tolerance NAME=VALUE for every spec.",
        ]
    return lines + notes
