"""Failures grouped by kind (infra, code, numeric, timeout, harness) for every report, and the
note of a spec that passed only on a retry, which names the kind of failure it recovered from."""

from __future__ import annotations

from collections.abc import Iterable

from harness.records import SpecResult
from harness.report.rows import FAILING
from harness.spec.model import FAILURE_KINDS

# A record of a failure whose kind was never decided: the worker's crash, an older run's record.
UNCLASSIFIED = "unclassified"


def failures_by_kind(records: Iterable[SpecResult]) -> dict[str, list[str]]:
    """The ids of failed and errored specs under their kind, kinds in a fixed order, empty kinds left out."""
    groups: dict[str, list[str]] = {}
    for record in records:
        if record.outcome in FAILING:
            groups.setdefault(record.failure_kind or UNCLASSIFIED, []).append(record.id)
    order = [*FAILURE_KINDS, UNCLASSIFIED]
    return {kind: sorted(groups[kind]) for kind in order if kind in groups}


def recovered(record: SpecResult) -> str:
    """For a spec that passed on a retry, what it recovered from (`infra retry: ...`, `numeric flaky: ...`); else ''."""
    if not record.flaky:
        return ""
    return next((w for w in record.warnings if " passed on attempt " in w), "flaky")


def kind_lines(records: Iterable[SpecResult]) -> list[str]:
    """`failed by kind: infra 1 (a); numeric 2 (b, c)` for the terminal, or nothing when nothing failed."""
    groups = failures_by_kind(records)
    if not groups:
        return []
    return ["failed by kind: " + "; ".join(f"{kind} {len(ids)} ({', '.join(ids)})" for kind, ids in groups.items())]
