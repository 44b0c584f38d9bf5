"""Regressions against a stored run: `run --baseline PATH` compares each spec with its record there.

A spec's `baseline` block sets how much its final loss, perplexity and duration may grow
(as fractions of the baseline's values) and whether growth past that fails the spec or
warns; `--tolerance METRIC=FRACTION` on the command line overrides the spec for every spec.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from pathlib import Path

from .checks import CheckResult
from .results import SpecResult, load_document
from .spec import BaselineSpec

METRICS = ("final_loss", "perplexity", "duration")


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
    """`METRIC=FRACTION` strings from the command line, checked."""
    tolerances = {}
    for value in values:
        metric, _, fraction = value.partition("=")
        if metric not in METRICS:
            raise ValueError(f"--tolerance {value!r}: the metric must be one of {', '.join(METRICS)}")
        try:
            tolerances[metric] = float(fraction)
        except ValueError:
            raise ValueError(f"--tolerance {value!r}: expected METRIC=FRACTION, e.g. final_loss=0.1") from None
        if not math.isfinite(tolerances[metric]) or tolerances[metric] < 0:
            raise ValueError(f"--tolerance {value!r}: a tolerance is a finite fraction of at least 0")
    return tolerances


def compare(record: SpecResult, baseline: SpecResult | None, spec: BaselineSpec, overrides: Mapping[str, float]) -> tuple[list[CheckResult], list[dict]]:
    """Checks named `baseline.<metric>` and the regressions they found, for the report."""
    if baseline is None:
        return [CheckResult("baseline", False, "a record of this spec in the baseline", "none: a new spec, nothing to compare", "warn")], []
    settings = dataclasses.replace(spec, **overrides)
    checks, regressions = [], []
    for metric in METRICS:
        then, now = getattr(baseline, metric), getattr(record, metric)
        if then is None or now is None or (metric == "duration" and not then):
            continue
        tolerance = getattr(settings, metric)
        limit = then * (1 + tolerance) if then >= 0 else then * (1 - tolerance)
        severity = settings.duration_severity if metric == "duration" else settings.severity
        passed = now <= limit
        checks.append(CheckResult(f"baseline.{metric}", passed, f"at most {limit:.4g} (baseline {then:.4g} + {tolerance:.0%})", f"{now:.4g}", severity))
        if not passed:
            regressions.append({"metric": metric, "baseline": then, "current": now, "tolerance": tolerance, "severity": severity})
    return checks, regressions
