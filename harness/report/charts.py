"""A spec's charts for the HTML report: its loss and each metric, with the bounds its checks set.

Runs of one spec side by side (a matrix, a comparison) are one line each. One run of a spec in
stages is one line per stage on the same axes, with a mark where each later stage starts and
where a planned interrupt stopped one, so a resume that jumped back up shows as a jump.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.records import SpecResult
from harness.report.svg import Bound, Mark, Points, curve_svg

SMALL_WIDTH, SMALL_HEIGHT = 280, 150


def bound_lines(record: SpecResult, key: str) -> list[Bound]:
    """The bound lines of one chart: `loss` is the final loss's (loss.final_min/final_max), others metrics.<key>'s."""
    low, high = (record.bounds.get(key) or [None, None])[:2]
    name = "loss.final" if key == "loss" else f"metrics.{key}."
    return [
        Bound(value, f"{name}{'_' if key == 'loss' else ''}{side} {value:g}")
        for side, value in (("min", low), ("max", high))
        if value is not None
    ]


def stage_marks(stages: Sequence[dict[str, Any]]) -> list[Mark]:
    """Where each stage after the first starts (its first logged step) and where an interrupt stopped a stage."""
    marks = []
    for index, stage in enumerate(stages):
        curve = stage.get("loss_curve") or []
        if index and curve and curve[0][0] is not None:
            marks.append(Mark(curve[0][0], f"{stage['id']} starts", "stage-boundary"))
        if stage.get("interrupted_at") is not None:
            marks.append(Mark(stage["interrupted_at"], f"interrupted at step {stage['interrupted_at']:g}", "interrupt"))
    return marks


def staged_charts(record: SpecResult) -> tuple[str, list[str]]:
    """One run of a spec in stages: the loss and each metric with a line per stage, the marks and the bounds."""
    stages = [s for s in record.stages if s.get("loss_curve") or s.get("metric_curves")]
    marks = stage_marks(stages)
    series: list[tuple[str, Points]] = [(f"stage {s['id']}", s.get("loss_curve") or []) for s in stages]
    loss = curve_svg(series, marks=marks, bounds=bound_lines(record, "loss"))
    keys = list(dict.fromkeys(key for s in stages for key in s.get("metric_curves") or {}))
    small = [
        curve_svg(
            [(f"stage {s['id']}", (s.get("metric_curves") or {}).get(key, [])) for s in stages],
            ylabel=key,
            marks=marks,
            bounds=bound_lines(record, key),
            width=SMALL_WIDTH,
            height=SMALL_HEIGHT,
        )
        for key in keys
    ]
    return loss, small


def spec_charts(specs: Sequence[SpecResult | None], names: Sequence[str]) -> tuple[str, str]:
    """The loss chart (the baseline's curve under it when the run had one) and the small multiples of the other
    metrics, each with its bounds; for one run of a spec in stages, a line per stage."""
    ran = [s for s in specs if s]
    if len(specs) == 1 and ran and any(stage.get("loss_curve") for stage in ran[0].stages):
        loss, small = staged_charts(ran[0])
    else:
        series = [
            (t if s and s.loss_curve else f"{t} ({'no loss logged' if s else 'not run'})", s.loss_curve if s else [])
            for t, s in zip(names, specs, strict=True)
        ]
        baseline = next((s.baseline_curve for s in ran if s.baseline_curve), [])
        bounds = bound_lines(ran[0], "loss") if ran else []
        loss = curve_svg(series, baseline=baseline, bounds=bounds)
        metrics = list(dict.fromkeys(name for s in ran for name in s.metric_curves))
        small = [
            curve_svg(
                [(t, s.metric_curves.get(m, []) if s else []) for t, s in zip(names, specs, strict=True)],
                ylabel=m,
                bounds=bound_lines(ran[0], m),
                width=SMALL_WIDTH,
                height=SMALL_HEIGHT,
            )
            for m in metrics
        ]
    loss = loss or "<p class=muted>no finite loss logged</p>"
    return loss, f'<div class="metrics">{"".join(small)}</div>' if any(small) else ""
