"""Regressions against a stored run: tolerances, severities, and bad baseline files."""

from __future__ import annotations

import json

import pytest

from harness.baseline import BaselineError, compare, load_baseline, parse_tolerances
from harness.results import SpecResult, write_results
from harness.spec import BaselineSpec


def record(**values) -> SpecResult:
    return SpecResult(id="s", outcome="passed", **values)


def test_within_tolerance_passes_and_growth_past_it_fails():
    checks, regressions = compare(record(final_loss=1.09, duration=10.0), record(final_loss=1.0, duration=10.0), BaselineSpec(), {})
    assert [(c.name, c.passed) for c in checks] == [("baseline.final_loss", True), ("baseline.duration", True)]
    assert regressions == []
    checks, regressions = compare(record(final_loss=1.2, perplexity=9.0, duration=16.0), record(final_loss=1.0, perplexity=4.0, duration=10.0), BaselineSpec(), {})
    by_name = {c.name: c for c in checks}
    assert not by_name["baseline.final_loss"].passed and by_name["baseline.final_loss"].severity == "fail"
    assert by_name["baseline.final_loss"].expected == "at most 1.1 (baseline 1 + 10%)"
    assert not by_name["baseline.perplexity"].passed
    assert not by_name["baseline.duration"].passed and by_name["baseline.duration"].severity == "warn"
    assert [r["metric"] for r in regressions] == ["final_loss", "perplexity", "duration"]
    assert regressions[0] == {"metric": "final_loss", "baseline": 1.0, "current": 1.2, "tolerance": 0.1, "severity": "fail"}


def test_lower_is_never_a_regression_and_missing_values_are_not_compared():
    checks, regressions = compare(record(final_loss=0.5, perplexity=None), record(final_loss=1.0, perplexity=3.0), BaselineSpec(), {})
    assert [(c.name, c.passed) for c in checks] == [("baseline.final_loss", True)]
    assert regressions == []


def test_negative_baseline_values_get_the_tolerance_in_the_right_direction():
    checks, _ = compare(record(final_loss=-0.95), record(final_loss=-1.0), BaselineSpec(final_loss=0.1), {})
    assert checks[0].passed
    checks, _ = compare(record(final_loss=-0.85), record(final_loss=-1.0), BaselineSpec(final_loss=0.1), {})
    assert not checks[0].passed


def test_the_command_line_overrides_the_spec_and_severity_follows_the_spec():
    spec = BaselineSpec(final_loss=0.5, severity="warn")
    checks, _ = compare(record(final_loss=1.2), record(final_loss=1.0), spec, {})
    assert checks[0].passed
    checks, regressions = compare(record(final_loss=1.2), record(final_loss=1.0), spec, {"final_loss": 0.0})
    assert not checks[0].passed and checks[0].severity == "warn" and regressions[0]["severity"] == "warn"


def test_a_spec_new_since_the_baseline_warns():
    (check,), regressions = compare(record(final_loss=1.0), None, BaselineSpec(), {})
    assert check.name == "baseline" and not check.passed and check.severity == "warn"
    assert regressions == []


def test_parse_tolerances():
    assert parse_tolerances(["final_loss=0.2", "duration=1"]) == {"final_loss": 0.2, "duration": 1.0}
    for bad, message in [("loss=0.1", "must be one of final_loss, perplexity, duration"), ("final_loss", "expected METRIC=FRACTION"), ("duration=-1", "at least 0")]:
        with pytest.raises(ValueError, match=message):
            parse_tolerances([bad])


def test_load_baseline_reads_a_run_dir_or_file_and_names_a_bad_one(tmp_path):
    write_results(tmp_path, [record(final_loss=1.0)], {})
    assert load_baseline(str(tmp_path))["s"].final_loss == 1.0
    assert load_baseline(str(tmp_path / "results.json"))["s"].final_loss == 1.0
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(BaselineError, match=f"--baseline {other} is not a trainspec results.json"):
        load_baseline(str(other))
    with pytest.raises(BaselineError, match="--baseline .*missing"):
        load_baseline(str(tmp_path / "missing"))
