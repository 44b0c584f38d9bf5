"""Parity and reproducibility: the comparison of two curves, the spec fields, and what the controller does with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.checks.parity import Comparison, Comparisons, apply, compare_curves, judge, stage_parity
from harness.devices.visible import Inventory
from harness.planning.plan import make_plan
from harness.records import SpecResult
from harness.spec.compared import groups, with_partners
from harness.spec.files import load_specs
from harness.spec.model import Spec
from harness.spec.parity import ParitySpec, StageParitySpec
from harness.spec.sections import LogSpec


def _base(rtol: float = 1e-4, atol: float = 0.0) -> Comparison:
    return Comparison("parity", "ddp", "accum", "loss", rtol, atol, "every common step")


def _tolerance(**kwargs) -> ParitySpec:
    return ParitySpec(spec="accum", **kwargs)


def test_equal_curves_pass_with_the_steps_compared_and_the_largest_difference():
    mine = [(1, 3.0), (2, 2.0), (3, 1.0000001)]
    theirs = [(1, 3.0), (2, 2.0), (3, 1.0)]
    result = compare_curves(_base(), mine, theirs, _tolerance(rtol=1e-6))
    assert result.status == "passed"
    assert (result.steps_compared, result.first_step, result.last_step) == (3, 1, 3)
    assert result.max_abs_diff == pytest.approx(1e-7)
    assert "3 common steps (from 1 to 3) agree" in result.check().line()


def test_the_first_differing_step_is_named_with_both_values_and_the_tolerance():
    mine = [(1, 3.0), (2, 2.5), (3, 1.0), (4, 9.0)]
    theirs = [(1, 3.0), (2, 2.0), (3, 1.0), (4, 1.0)]
    result = compare_curves(_base(rtol=1e-6), mine, theirs, _tolerance(rtol=1e-6))
    assert result.status == "failed"
    assert (result.first_failing_step, result.value, result.partner_value) == (2, 2.5, 2.0)
    assert result.max_abs_diff == 8.0  # over every common step, not only up to the first failure
    line = result.check().line()
    assert "step 2 differs: ddp 2.5 vs accum 2.0" in line
    assert "> 2e-06" in line and "rtol 1e-06" in line


def test_only_common_steps_are_compared_and_a_window_limits_them():
    mine = [(1, 3.0), (5, 2.0), (10, 1.0)]
    theirs = [(1, 9.0), (2, 9.0), (5, 2.0), (10, 1.0)]
    assert compare_curves(_base(), mine, theirs, _tolerance()).first_failing_step == 1
    windowed = compare_curves(_base(), mine, theirs, _tolerance(steps=[5, 10]))
    assert windowed.status == "passed" and windowed.steps_compared == 2
    final = compare_curves(_base(), mine, theirs, _tolerance(steps="final"))
    assert final.status == "passed" and (final.first_step, final.steps_compared) == (10, 1)


def test_no_common_step_is_a_failure_with_its_reason():
    result = compare_curves(_base(), [(100, 1.0)], [(1, 1.0), (4, 1.0)], _tolerance())
    assert result.status == "failed" and result.steps_compared == 0
    assert result.reason == "no common step to compare: ddp logged steps 100 to 100, accum steps 1 to 4"
    windowed = compare_curves(_base(), [(1, 1.0)], [(1, 1.0)], _tolerance(steps=[5, 9]))
    assert "within steps 5 to 9" in windowed.reason


def test_a_missing_or_nan_value_at_a_common_step_fails():
    nan = compare_curves(_base(), [(1, float("nan"))], [(1, float("nan"))], _tolerance())
    assert nan.status == "failed" and nan.first_failing_step == 1
    missing = compare_curves(_base(), [(1, None)], [(1, 1.0)], _tolerance())
    assert missing.status == "failed" and "ddp missing vs accum 1.0" in missing.found()
    assert json.dumps(nan.as_dict(), allow_nan=False)


def test_absolute_tolerance_lets_a_tiny_value_pass():
    result = compare_curves(_base(atol=1e-3), [(1, 1e-4)], [(1, 0.0)], _tolerance(atol=1e-3))
    assert result.status == "passed"
    assert result.as_dict()["max_rel_diff"] is None  # against a zero: unbounded, and JSON has no infinity


def _record(spec_id: str, outcome: str = "passed", log: Path | None = None, reason: str = "") -> SpecResult:
    return SpecResult(id=spec_id, outcome=outcome, reason=reason, paths={"log": str(log)} if log else {})  # type: ignore[arg-type]


def _log(folder: Path, name: str, losses: list[float]) -> Path:
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"step": i + 1, "loss": v}) + "\n" for i, v in enumerate(losses)))
    return path


def _spec(spec_id: str, **kwargs) -> Spec:
    return Spec(id=spec_id, command=["x"], cpu_ok=True, **kwargs)


@pytest.mark.parametrize(
    ("outcome", "reason", "said"),
    [
        ("skipped", "needs 2 GPUs", "accum was skipped: needs 2 GPUs"),
        ("failed", "exit_code: exit code 1", "accum failed: exit_code: exit code 1"),
        ("error", "", "accum failed: error"),
    ],
)
def test_a_partner_that_did_not_pass_fails_the_comparison_with_its_reason(tmp_path, outcome, reason, said):
    specs = {"ddp": _spec("ddp", parity=ParitySpec(spec="accum")), "accum": _spec("accum")}
    comparisons = Comparisons(specs.get)
    records = {"ddp": _record("ddp", log=_log(tmp_path, "ddp", [3, 2]))}
    assert comparisons.arrived(records["ddp"], records) == []
    records["accum"] = _record("accum", outcome, reason=reason)
    (made,) = comparisons.arrived(records["accum"], records)
    assert made.status == "failed" and made.reason == said
    assert comparisons.arrived(records["accum"], records) == []  # made once


def test_a_partner_that_never_ran_fails_at_the_end_of_the_run(tmp_path):
    specs = {"ddp": _spec("ddp", parity=ParitySpec(spec="accum"))}
    comparisons = Comparisons(specs.get)
    records = {"ddp": _record("ddp", log=_log(tmp_path, "ddp", [3, 2]))}
    comparisons.arrived(records["ddp"], records)
    (made,) = comparisons.remaining(records)
    assert made.status == "failed" and made.reason.startswith("accum did not run in this run: it was not selected")
    assert apply(made, records) is True
    assert records["ddp"].outcome == "failed" and records["ddp"].reason.startswith("parity:accum: accum did not run")
    assert records["ddp"].checks[-1]["name"] == "parity:accum" and records["ddp"].failure_kind == "numeric"


def test_a_failing_spec_is_not_compared_and_not_failed_twice(tmp_path):
    wanted = Comparisons({"ddp": _spec("ddp", parity=ParitySpec(spec="accum"))}.get)
    records = {"ddp": _record("ddp", "failed"), "accum": _record("accum", log=_log(tmp_path, "a", [1]))}
    (made,) = wanted.arrived(records["accum"], records) + wanted.arrived(records["ddp"], records)
    assert made.status == "not compared" and made.reason == "not compared: ddp itself failed"
    assert apply(made, records) is False
    assert records["accum"].parity == records["ddp"].parity == [made.as_dict()]


def test_the_comparison_reads_the_whole_logs_and_lands_in_both_records(tmp_path):
    specs = {"ddp": _spec("ddp", parity=ParitySpec(spec="accum", rtol=1e-6)), "accum": _spec("accum")}
    records = {
        "ddp": _record("ddp", log=_log(tmp_path, "ddp", [3.0, 2.5, 1.0])),
        "accum": _record("accum", log=_log(tmp_path, "accum", [3.0, 2.0, 1.0])),
    }
    made = judge(_declared(specs["ddp"]), records["ddp"], records["accum"], specs.get)
    assert made.first_failing_step == 2
    assert apply(made, records) is True
    assert records["accum"].outcome == "passed" and records["accum"].parity[0]["first_failing_step"] == 2


def _declared(spec: Spec):
    from harness.checks.parity import declared

    (wanted,) = declared(spec)
    return wanted


def test_reproducible_compares_every_repeat_with_the_first_run(tmp_path):
    (spec, second, third), errors = _load(
        tmp_path,
        "id: r\ncommand: [x]\nrepeat: 3\nreproducible: {metric: loss}\nparity: {spec: other}\n",
    )
    assert errors == []
    assert [s.id for s in (spec, second, third)] == ["r", "r@2", "r@3"]
    assert second.parity is None and second.reproducible is None and second.repeat == 1
    from harness.checks.parity import declared

    assert [(d.kind, d.partner) for d in declared(spec)] == [
        ("parity", "other"),
        ("reproducible", "r@2"),
        ("reproducible", "r@3"),
    ]


def _load(tmp_path: Path, text: str) -> tuple[list[Spec], list]:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return load_specs([path])


def test_groups_join_partners_and_repeats_and_selection_keeps_them_together():
    specs = [_spec("a", parity=ParitySpec(spec="b")), _spec("b"), _spec("c", repeat=2), _spec("d")]
    group_of = groups(specs)
    assert group_of["a"] == group_of["b"] == {"a", "b"}
    assert group_of["c"] == {"c", "c@2"} and "d" not in group_of
    assert with_partners(specs, {"b", "d"}) == {"a", "b", "d"}


def test_the_plan_pulls_a_partner_from_outside_the_tier_and_runs_compared_specs_side_by_side():
    specs = [
        _spec("long", gpus=1, timeout=500, tier="standard"),
        _spec("ddp", gpus=1, timeout=50, tier="standard", parity=ParitySpec(spec="accum")),
        _spec("mid", gpus=1, timeout=200, tier="standard"),
        _spec("accum", gpus=1, timeout=60, tier="full"),
    ]
    plan = make_plan(specs, Inventory(("0", "1"), "fake", "test"), {}, "standard")
    order = [p.spec.id for p in plan.runs]
    assert set(order) == {"long", "ddp", "mid", "accum"}
    assert abs(order.index("ddp") - order.index("accum")) == 1
    assert plan.notes == ["accum: outside tier standard, runs as the partner of ddp (parity or repeat)"]
    assert "accum" not in [
        p.spec.id for p in make_plan(specs[:1] + specs[2:], Inventory(("0",), "fake", "test"), {}, "standard").runs
    ]


def test_stage_parity_compares_with_an_earlier_stage(tmp_path):
    straight = _log(tmp_path, "straight", [3.0, 2.0, 1.5, 1.2])
    resumed = tmp_path / "resumed.jsonl"
    resumed.write_text("".join(json.dumps({"step": s, "loss": v}) + "\n" for s, v in ((3, 1.5), (4, 1.3))))
    log = LogSpec()
    made = stage_parity("resume", StageParitySpec(stage="straight", rtol=1e-6), (resumed, log), (straight, log))
    assert made.kind == "stage parity" and made.name == "parity:straight"
    assert (made.steps_compared, made.first_failing_step, made.value, made.partner_value) == (2, 4, 1.3, 1.2)
    missing = stage_parity("resume", StageParitySpec(stage="straight"), (None, log), (straight, log))
    assert missing.reason == "stage resume left no training log to compare"


def test_a_metric_other_than_the_loss_is_compared_by_its_key(tmp_path):
    from harness.checks.parity import read_curve

    path = tmp_path / "log.jsonl"
    records = [
        {"step": 1, "loss": 3, "grad_norm": 0.5},
        {"step": 2, "eval_loss": 1},
        {"step": 3, "loss": 2, "grad_norm": 0.25},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert read_curve(path, LogSpec(), "grad_norm") == [(1, 0.5), (3, 0.25)]
    assert read_curve(path, LogSpec(), "loss") == [(1, 3.0), (3, 2.0)]


def test_the_report_draws_the_pair_on_one_chart_with_the_first_differing_step_marked(tmp_path):
    from harness.records import RunDocument
    from harness.report.html import render_html

    records = {
        "ddp": _record("ddp", log=_log(tmp_path, "ddp", [3.0, 2.5, 1.0])),
        "accum": _record("accum", log=_log(tmp_path, "accum", [3.0, 2.0, 1.0])),
    }
    records["ddp"].loss_curve = [[1, 3.0], [2, 2.5], [3, 1.0]]
    records["accum"].loss_curve = [[1, 3.0], [2, 2.0], [3, 1.0]]
    specs = {"ddp": _spec("ddp", parity=ParitySpec(spec="accum", rtol=1e-6)), "accum": _spec("accum")}
    apply(judge(_declared(specs["ddp"]), records["ddp"], records["accum"], specs.get), records)
    page = render_html([RunDocument(specs=list(records.values()))])
    assert "first differing step 2" in page and "parity of ddp with accum: failed" in page
    # One chart holds both curves, the differing step marked on it: its legend names each.
    at = page.index('class="differs"')
    chart = page[page.rindex("<svg", 0, at) : page.index("</svg>", at)]
    assert ">ddp</text>" in chart and ">accum</text>" in chart
