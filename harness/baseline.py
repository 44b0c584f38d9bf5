"""Regressions against a stored run: `run --baseline PATH` compares each spec with its record there.

A spec's `baseline` block sets how much its final loss, perplexity and duration may grow
(as fractions of the baseline's values, and in absolute terms as `<metric>_abs`: within either
passes) and whether growth past that fails the spec or warns; `--tolerance NAME=VALUE` on the
command line overrides the spec for every spec.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from pathlib import Path

from .checks import CheckResult
from .results import Regression, SpecResult, load_document
from .spec import BaselineSpec

METRICS = ("final_loss", "perplexity", "duration")
TOLERANCES = tuple(name for metric in METRICS for name in (metric, f"{metric}_abs"))


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
            raise ValueError(f"--tolerance {value!r}: expected NAME=VALUE, e.g. final_loss=0.1 or final_loss_abs=0.002") from None
        if not math.isfinite(tolerances[name]) or tolerances[name] < 0:
            raise ValueError(f"--tolerance {value!r}: a tolerance is a finite number of at least 0")
    return tolerances


def compare(record: SpecResult, baseline: SpecResult | None, spec: BaselineSpec, overrides: Mapping[str, float]) -> tuple[list[CheckResult], list[Regression]]:
    """Checks named `baseline.<metric>` and the regressions they found, for the report."""
    if baseline is None:
        return [CheckResult("baseline", False, "a record of this spec in the baseline", "none: a new spec, nothing to compare", "warn")], []
    settings = dataclasses.replace(spec, **overrides)  # type: ignore[arg-type]
    checks, regressions = [], []
    for metric in METRICS:
        then, now = getattr(baseline, metric), getattr(record, metric)
        if then is None or now is None or (metric == "duration" and not then):
            continue
        relative, absolute = getattr(settings, metric), getattr(settings, f"{metric}_abs")
        # |then| keeps a negative baseline's allowance pointing up.
        limit = max(then + abs(then) * relative, then + absolute)
        severity = settings.duration_severity if metric == "duration" else settings.severity
        passed = now <= limit
        allowed = f"{relative:.0%}" + (f" or {absolute:.4g}" if absolute else "")
        checks.append(CheckResult(f"baseline.{metric}", passed, f"at most {limit:.4g} (baseline {then:.4g} + {allowed})", f"{now:.4g}", severity))
        if not passed:
            regression: Regression = {"metric": metric, "baseline": then, "current": now, "tolerance": relative, "severity": severity}
            if absolute:
                regression["tolerance_abs"] = absolute
            regressions.append(regression)
    return checks, regressions
