"""Regressions against a stored run: tolerances, severities, and bad baseline files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.baseline import BaselineError, compare, load_baseline, parse_tolerances
from harness.results import SpecResult, write_results
from harness.spec import BaselineSpec

REPO = Path(__file__).resolve().parents[2]


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
    assert parse_tolerances(["final_loss=0.2", "duration=1", "final_loss_abs=0.002"]) == {"final_loss": 0.2, "duration": 1.0, "final_loss_abs": 0.002}
    for bad, message in [("loss=0.1", "must be one of final_loss, final_loss_abs, perplexity, perplexity_abs, duration, duration_abs"),
                         ("final_loss", "expected NAME=VALUE"), ("duration=-1", "at least 0"), ("final_loss_abs=-0.1", "at least 0"), ("final_loss_rel=0.1", "must be one of")]:
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


# ---------------------------------------------------------------- hostile baseline files and tolerances


def results_file(tmp_path, specs) -> str:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"format": "trainspec-results/1", "specs": specs}))
    return str(path)


@pytest.mark.parametrize(("specs", "field"), [
    ("abc", "specs: expected a list of spec records"),
    ({"s": {}}, "specs: expected a list of spec records"),
    ([1, 2], "specs[0]: expected an object, found 1"),
    ([{"outcome": "passed", "final_loss": 1.0}], "specs[0].id: missing"),
    ([{"id": "s", "outcome": "passed", "duration": "fast"}], "specs[0] (spec 's').duration: expected a number, found \"fast\""),
    ([{"id": "s", "outcome": "passed", "final_loss": [1]}], "specs[0] (spec 's').final_loss: expected a number"),
    ([{"id": "s", "outcome": "passed", "loss_curve": {"1": 2}}], "specs[0] (spec 's').loss_curve: expected a list"),
])
def test_a_baseline_of_the_wrong_shape_is_bad_input_naming_file_and_field(tmp_path, specs, field):
    path = results_file(tmp_path, specs)
    with pytest.raises(BaselineError) as error:
        load_baseline(path)
    assert str(error.value).startswith(f"--baseline {path}: {field}"), error.value


@pytest.mark.parametrize("bad", ["final_loss=nan", "final_loss=inf", "duration=-inf", "perplexity=NaN"])
def test_parse_tolerances_refuses_values_that_are_not_finite(bad):
    with pytest.raises(ValueError, match=f"--tolerance '{bad}': a tolerance is a finite number of at least 0"):
        parse_tolerances([bad])


@pytest.mark.parametrize(("flags", "message"), [
    (["--baseline", "BAD"], "specs[0] (spec 's').duration: expected a number, found \"fast\""),
    (["--tolerance", "final_loss=nan"], "--tolerance 'final_loss=nan': a tolerance is a finite number of at least 0"),
])
def test_the_run_command_exits_2_on_a_bad_baseline_or_tolerance(tmp_path, flags, message):
    bad = results_file(tmp_path, [{"id": "s", "outcome": "passed", "duration": "fast"}])
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "s.yaml").write_text("id: s\ncommand: ['true']\ngpus: 0\nmin_steps_logged: 0\n")
    argv = [sys.executable, "-m", "harness", "run", "--fake-gpus", "1", "--run-dir", "rd", *(bad if f == "BAD" else f for f in flags)]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "TRAINSPEC_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "rd" / "results.json").exists()


# ---------------------------------------------------------------- absolute tolerances


def test_a_value_within_the_absolute_tolerance_passes_though_past_the_relative_one():
    then, now = record(final_loss=0.0057), record(final_loss=0.0070)
    (check,), regressions = compare(now, then, BaselineSpec(final_loss=0.1, final_loss_abs=0.002), {})
    assert check.passed and regressions == []
    assert check.expected == "at most 0.0077 (baseline 0.0057 + 10% or 0.002)"
    (check,), regressions = compare(now, then, BaselineSpec(final_loss=0.1), {})
    assert not check.passed and regressions[0]["tolerance"] == 0.1 and "tolerance_abs" not in regressions[0]


def test_a_value_past_both_tolerances_fails_and_the_regression_names_both():
    (check,), (regression,) = compare(record(final_loss=0.0080), record(final_loss=0.0057), BaselineSpec(final_loss=0.1, final_loss_abs=0.002), {})
    assert not check.passed
    assert regression == {"metric": "final_loss", "baseline": 0.0057, "current": 0.008, "tolerance": 0.1, "severity": "fail", "tolerance_abs": 0.002}


def test_the_relative_tolerance_still_passes_a_large_value_past_a_small_absolute_one():
    (check,), _ = compare(record(duration=105.0), record(duration=100.0), BaselineSpec(duration=0.1, duration_abs=1.0), {})
    assert check.passed


def test_the_command_line_sets_an_absolute_tolerance_for_every_spec():
    (check,), _ = compare(record(final_loss=0.0070), record(final_loss=0.0057), BaselineSpec(), parse_tolerances(["final_loss_abs=0.002"]))
    assert check.passed


def test_a_regression_with_an_absolute_tolerance_reads_in_the_report():
    from harness.report_data import regression_text

    assert regression_text({"metric": "final_loss", "baseline": 0.0057, "current": 0.008, "tolerance": 0.1, "severity": "fail", "tolerance_abs": 0.002}) == \
        "final_loss 0.0057 → 0.008 (+40%, allowed +10% or +0.002, fail)"


@pytest.mark.parametrize(("block", "message"), [
    ("final_loss_abs: -0.1", "baseline.final_loss_abs: must be at least 0"),
    ("final_loss_abs: .nan", "baseline.final_loss_abs: expected a finite number"),
    ("duration: .inf", "baseline.duration: expected a finite number"),
    ("final_loss_abs: fast", "baseline.final_loss_abs"),
    ("final_loss: {rel: 0.1}", "baseline.final_loss"),
])
def test_bad_tolerances_in_a_spec_name_the_file_and_field(tmp_path, block, message):
    from harness.spec import load_spec_file
    from harness.structure import SpecError

    path = tmp_path / "s.yaml"
    path.write_text(f"id: s\ncommand: [x]\nbaseline:\n  {block}\n")
    with pytest.raises(SpecError) as error:
        load_spec_file(path)
    assert str(path) in str(error.value) and message in str(error.value), error.value
