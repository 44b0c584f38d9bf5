"""A spec's charts: one chart across its stages with the stage starts, the interrupt and each check's bound."""

from __future__ import annotations

from harness.records import SpecResult
from harness.report.charts import bound_lines, spec_charts, stage_marks
from harness.report.svg import Bound, Mark


def staged_record() -> SpecResult:
    record = SpecResult(id="resumes", outcome="passed")
    record.stages = [
        {
            "id": "train",
            "loss_curve": [[s, 5.0 - 0.1 * s] for s in range(1, 26)],
            "metric_curves": {"val_loss": [[10, 4.2], [20, 3.3]]},
            "interrupted_at": 25.0,
        },
        {
            "id": "resume",
            "loss_curve": [[s, 5.2 - 0.05 * s] for s in range(21, 61)],
            "metric_curves": {"val_loss": [[30, 3.0], [60, 2.0]]},
        },
    ]
    record.bounds = {"loss": [None, 2.5], "val_loss": [1.0, 50.0]}
    return record


def test_stage_starts_and_the_interrupt_are_marked():
    assert stage_marks(staged_record().stages) == [
        Mark(25.0, "interrupted at step 25", "interrupt"),
        Mark(21, "resume starts", "stage-boundary"),
    ]


def test_bounds_are_named_after_their_checks():
    record = staged_record()
    assert bound_lines(record, "loss") == [Bound(2.5, "loss.final_max 2.5")]
    assert bound_lines(record, "val_loss") == [
        Bound(1.0, "metrics.val_loss.min 1"),
        Bound(50.0, "metrics.val_loss.max 50"),
    ]
    assert bound_lines(record, "grad_norm") == []


def test_one_chart_per_spec_across_its_stages_with_a_chart_per_checked_metric():
    loss, metrics = spec_charts([staged_record()], ["run"])
    assert "stage train" in loss and "stage resume" in loss
    assert loss.count('class="stage-boundary"') == 1 and loss.count('class="interrupt"') == 1
    assert "loss.final_max 2.5" in loss and 'class="bound"' in loss
    assert 'aria-label="val_loss curve"' in metrics
    # A bound far off the values is named under the chart rather than squashing the curve.
    assert "metrics.val_loss.max 50 (off the chart)" in metrics and "metrics.val_loss.min 1</text>" in metrics


def test_runs_side_by_side_keep_one_line_per_run_with_the_bound():
    one, two = SpecResult(id="s", outcome="passed"), SpecResult(id="s", outcome="passed")
    for record in (one, two):
        record.loss_curve = [[1, 3.0], [2, 2.0]]
        record.bounds = {"loss": [None, 2.5]}
    loss, _ = spec_charts([one, two], ["a", "b"])
    assert "stage-boundary" not in loss and "loss.final_max 2.5" in loss
