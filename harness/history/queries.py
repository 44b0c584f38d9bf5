"""Reading the history back: each spec's runs in commit order, for `harness history` and the report's trends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from harness.history.analysis import WITHOUT_CURVE, metric_value
from harness.history.store import Store
from harness.history.tables import spec_runs

SPARKS = "▁▂▃▄▅▆▇█"


@dataclass
class Point:
    commit: str | None
    created: str
    outcome: str
    failure_kind: str | None
    value: float | None
    change: float | None  # against the previous point with a value, relative


def spec_ids(store: Store) -> list[str]:
    """Every spec id in the history, one index probe each (a DISTINCT would read every row's index entry)."""
    found: list[str] = []
    while True:
        query = sa.select(sa.func.min(spec_runs.c.spec_id).label("next"))
        if found:
            query = query.where(spec_runs.c.spec_id > found[-1])
        following = store.query(query)[0]["next"]
        if following is None:
            return found
        found.append(following)


def series(store: Store, spec_id: str, metric: str, last: int) -> list[Point]:
    """The spec's last `last` runs, oldest commit first, with `metric` and its change run to run."""
    query = (
        sa.select(*WITHOUT_CURVE)
        .where(spec_runs.c.spec_id == spec_id)
        .order_by(spec_runs.c.commit_time.desc().nulls_last(), spec_runs.c.created.desc(), spec_runs.c.id.desc())
        .limit(last)
    )
    rows: list[dict[str, Any]] = list(reversed(store.query(query)))
    points: list[Point] = []
    previous: float | None = None
    for row in rows:
        value = metric_value(row, metric)
        change = (value - previous) / abs(previous) if value is not None and previous else None
        points.append(Point(row["commit"], row["created"], row["outcome"], row["failure_kind"], value, change))
        previous = value if value is not None else previous
    return points


def sparkline(values: list[float | None]) -> str:
    """One character per run, its height the value between the series' least and most; a space where none."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = high - low
    return "".join(
        " " if v is None else SPARKS[0 if not span else min(len(SPARKS) - 1, int((v - low) / span * len(SPARKS)))]
        for v in values
    )


TREND_METRICS = ("final_loss", "duration")


def trends(store: Store, spec_ids: list[str], last: int) -> dict[str, list[tuple[str, str, list[list[float | None]]]]]:
    """Per spec: (metric, label, [[run number, value], ...]) over its last `last` runs, for the HTML report."""
    out: dict[str, list[tuple[str, str, list[list[float | None]]]]] = {}
    for spec_id in spec_ids:
        charts = []
        for metric in TREND_METRICS:
            points = series(store, spec_id, metric, last)
            if any(p.value is not None for p in points):
                commits = [p.commit[:7] for p in points if p.commit]
                span = f"{commits[0]}..{commits[-1]}" if commits else f"{len(points)} runs"
                label = f"{metric}, last {len(points)} runs ({span})"
                charts.append((metric, label, [[float(i + 1), p.value] for i, p in enumerate(points)]))
        if charts:
            out[spec_id] = charts
    return out
