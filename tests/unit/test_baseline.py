"""Regressions against a stored run: tolerances, severities, and bad baseline files."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.checks.baseline import BaselineError, compare, load_baseline, parse_tolerances, recommend
from harness.records import RunDocument, SpecResult, write_results
from harness.spec.sections import BaselineSpec

REPO = Path(__file__).resolve().parents[2]


def record(**values) -> SpecResult:
    return SpecResult(id="s", outcome="passed", **values)


def test_within_tolerance_passes_and_growth_past_it_fails():
    checks, regressions = compare(
        record(final_loss=1.09, duration=10.0), record(final_loss=1.0, duration=10.0), BaselineSpec(), {}
    )
    assert [(c.name, c.passed) for c in checks] == [("baseline.final_loss", True), ("baseline.duration", True)]
    assert regressions == []
    checks, regressions = compare(
        record(final_loss=1.2, perplexity=9.0, duration=16.0),
        record(final_loss=1.0, perplexity=4.0, duration=10.0),
        BaselineSpec(),
        {},
    )
    by_name = {c.name: c for c in checks}
    assert not by_name["baseline.final_loss"].passed and by_name["baseline.final_loss"].severity == "fail"
    assert by_name["baseline.final_loss"].expected == "at most 1.1 (baseline 1 + 10%)"
    assert not by_name["baseline.perplexity"].passed
    assert not by_name["baseline.duration"].passed and by_name["baseline.duration"].severity == "warn"
    assert [r["metric"] for r in regressions] == ["final_loss", "perplexity", "duration"]
    assert regressions[0] == {
        "metric": "final_loss",
        "baseline": 1.0,
        "current": 1.2,
        "tolerance": 0.1,
        "severity": "fail",
    }


def test_lower_is_never_a_regression_and_missing_values_are_not_compared():
    checks, regressions = compare(
        record(final_loss=0.5, perplexity=None), record(final_loss=1.0, perplexity=3.0), BaselineSpec(), {}
    )
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
    assert parse_tolerances(["final_loss=0.2", "duration=1", "final_loss_abs=0.002"]) == {
        "final_loss": 0.2,
        "duration": 1.0,
        "final_loss_abs": 0.002,
    }
    for bad, message in [
        ("loss=0.1", "must be one of final_loss, final_loss_abs, perplexity, perplexity_abs, duration, duration_abs"),
        ("final_loss", "expected NAME=VALUE"),
        ("duration=-1", "at least 0"),
        ("final_loss_abs=-0.1", "at least 0"),
        ("final_loss_rel=0.1", "must be one of"),
    ]:
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


@pytest.mark.parametrize(
    ("specs", "field"),
    [
        ("abc", "specs: expected a list of spec records"),
        ({"s": {}}, "specs: expected a list of spec records"),
        ([1, 2], "specs[0]: expected an object, found 1"),
        ([{"outcome": "passed", "final_loss": 1.0}], "specs[0].id: missing"),
        (
            [{"id": "s", "outcome": "passed", "duration": "fast"}],
            "specs[0] (spec 's').duration: expected a number, found \"fast\"",
        ),
        ([{"id": "s", "outcome": "passed", "final_loss": [1]}], "specs[0] (spec 's').final_loss: expected a number"),
        ([{"id": "s", "outcome": "passed", "loss_curve": {"1": 2}}], "specs[0] (spec 's').loss_curve: expected a list"),
    ],
)
def test_a_baseline_of_the_wrong_shape_is_bad_input_naming_file_and_field(tmp_path, specs, field):
    path = results_file(tmp_path, specs)
    with pytest.raises(BaselineError) as error:
        load_baseline(path)
    assert str(error.value).startswith(f"--baseline {path}: {field}"), error.value


@pytest.mark.parametrize("bad", ["final_loss=nan", "final_loss=inf", "duration=-inf", "perplexity=NaN"])
def test_parse_tolerances_refuses_values_that_are_not_finite(bad):
    with pytest.raises(ValueError, match=f"--tolerance '{bad}': a tolerance is a finite number of at least 0"):
        parse_tolerances([bad])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--baseline", "BAD"], "specs[0] (spec 's').duration: expected a number, found \"fast\""),
        (
            ["--tolerance", "final_loss=nan"],
            "--tolerance 'final_loss=nan': a tolerance is a finite number of at least 0",
        ),
    ],
)
def test_the_run_command_exits_2_on_a_bad_baseline_or_tolerance(tmp_path, flags, message):
    bad = results_file(tmp_path, [{"id": "s", "outcome": "passed", "duration": "fast"}])
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "s.yaml").write_text("id: s\ncommand: ['true']\ngpus: 0\nmin_steps_logged: 0\n")
    argv = [
        sys.executable,
        "-m",
        "harness",
        "run",
        "--fake-gpus",
        "1",
        "--run-dir",
        "rd",
        *(bad if f == "BAD" else f for f in flags),
    ]
    proc = subprocess.run(
        argv,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "TRAINSPEC_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)},
        timeout=120,
    )
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


# A final loss past 10% and 0.002 over its baseline: as the comparison records it and the report reads it.
PAST_BOTH_TOLERANCES = {
    "metric": "final_loss",
    "baseline": 0.0057,
    "current": 0.008,
    "tolerance": 0.1,
    "severity": "fail",
    "tolerance_abs": 0.002,
}


def test_a_value_past_both_tolerances_fails_and_the_regression_names_both():
    (check,), (regression,) = compare(
        record(final_loss=0.0080), record(final_loss=0.0057), BaselineSpec(final_loss=0.1, final_loss_abs=0.002), {}
    )
    assert not check.passed
    assert regression == PAST_BOTH_TOLERANCES


def test_the_relative_tolerance_still_passes_a_large_value_past_a_small_absolute_one():
    (check,), _ = compare(
        record(duration=105.0), record(duration=100.0), BaselineSpec(duration=0.1, duration_abs=1.0), {}
    )
    assert check.passed


def test_the_command_line_sets_an_absolute_tolerance_for_every_spec():
    (check,), _ = compare(
        record(final_loss=0.0070), record(final_loss=0.0057), BaselineSpec(), parse_tolerances(["final_loss_abs=0.002"])
    )
    assert check.passed


def test_a_regression_with_an_absolute_tolerance_reads_in_the_report():
    from harness.report.rows import regression_text

    assert regression_text(PAST_BOTH_TOLERANCES) == "final_loss 0.0057 → 0.008 (+40%, allowed +10% or +0.002, fail)"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("final_loss_abs: -0.1", "baseline.final_loss_abs: must be at least 0"),
        ("final_loss_abs: .nan", "baseline.final_loss_abs: expected a finite number"),
        ("duration: .inf", "baseline.duration: expected a finite number"),
        ("final_loss_abs: fast", "baseline.final_loss_abs"),
        ("final_loss: {rel: 0.1}", "baseline.final_loss"),
    ],
)
def test_bad_tolerances_in_a_spec_name_the_file_and_field(tmp_path, block, message):
    from harness.spec.files import load_spec_file
    from harness.spec.typed_yaml import SpecError

    path = tmp_path / "s.yaml"
    path.write_text(f"id: s\ncommand: [x]\nbaseline:\n  {block}\n")
    with pytest.raises(SpecError) as error:
        load_spec_file(path)
    assert str(path) in str(error.value) and message in str(error.value), error.value


# ---------------------------------------------------------------- the loss curve, step by step


def clean_curve() -> list[list[float | None]]:
    return [[float(step), 3.0 * 0.97**step] for step in range(1, 101)]


def spiked(curve: list, start: int = 40, end: int = 60, factor: float = 1.5) -> list:
    return [[step, value * factor if start <= step <= end else value] for step, value in curve]


def curve_check(now: list, then: list, spec: BaselineSpec | None = None, overrides: dict | None = None):
    checks, regressions = compare(
        record(loss_curve=now), record(loss_curve=then), spec or BaselineSpec(), overrides or {}
    )
    return next(c for c in checks if c.name == "baseline.loss_curve"), regressions


def test_a_spike_with_the_same_final_loss_fails_naming_its_first_step_and_the_clean_curve_passes():
    clean = clean_curve()
    spike = spiked(clean)
    assert spike[-1] == clean[-1]
    check, (regression,) = curve_check(spike, clean)
    assert not check.passed and check.severity == "fail"
    assert check.expected == "at most 1% of the baseline's 100 steps above its loss + 5%"
    assert (
        check.found
        == f"21 steps (21.0%) above or missing, the first at step 40: {spike[39][1]:.4g} against the baseline's "
        f"{clean[39][1]:.4g} (allowed +5%)"
    )
    assert regression == {
        "metric": "loss_curve",
        "baseline": clean[39][1],
        "current": spike[39][1],
        "tolerance": 0.05,
        "severity": "fail",
        "step": 40.0,
    }
    check, regressions = curve_check(clean, clean)
    assert check.passed and check.found == "every step within" and regressions == []


def test_the_report_names_the_step_a_curve_departs_at():
    from harness.report.rows import regression_text

    _, (regression,) = curve_check(spiked(clean_curve()), clean_curve())
    assert regression_text(regression).startswith("loss_curve at step 40 ")
    assert regression_text(regression).endswith("(+50%, allowed +5%, fail)")


def test_missing_or_nan_steps_count_as_departures():
    clean = clean_curve()
    check, (regression,) = curve_check(clean[:50], clean)
    assert not check.passed and "50 steps (50.0%) above or missing, the first at step 51: no finite loss" in check.found
    assert regression["current"] is None and regression["step"] == 51.0
    holed = [[step, None if step in (10, 11) else value] for step, value in clean]
    check, _ = curve_check(holed, clean)
    assert not check.passed and "first at step 10: no finite loss" in check.found


def test_a_fraction_of_the_steps_may_depart():
    clean = clean_curve()
    check, regressions = curve_check(spiked(clean, 40, 40), clean)
    assert check.passed and regressions == [] and "1 steps (1.0%)" in check.found  # still said, for the record
    check, _ = curve_check(spiked(clean, 40, 41), clean)
    assert not check.passed
    check, _ = curve_check(spiked(clean), clean, BaselineSpec(curve_fraction=0.25))
    assert check.passed


def test_the_curve_tolerances_follow_the_spec_and_the_command_line():
    clean = clean_curve()
    check, _ = curve_check(spiked(clean), clean, BaselineSpec(curve=0.6))
    assert check.passed
    check, _ = curve_check(spiked(clean), clean, BaselineSpec(curve=0.6), parse_tolerances(["curve=0.1"]))
    assert not check.passed
    # Late in training the loss is small: an absolute allowance passes noise that is large relative to it.
    tiny = [[step, 0.001] for step in range(1, 101)]
    noisy = [[step, 0.0015] for step in range(1, 101)]
    assert not curve_check(noisy, tiny)[0].passed
    check, _ = curve_check(noisy, tiny, BaselineSpec(curve_abs=0.001, severity="warn"))
    assert check.passed
    check, (regression,) = curve_check(spiked(clean), clean, BaselineSpec(curve_abs=0.01, severity="warn"))
    assert check.severity == "warn" and regression["tolerance_abs"] == 0.01


def test_a_lower_curve_is_no_regression_and_a_baseline_without_a_curve_is_not_compared():
    clean = clean_curve()
    assert curve_check([[s, v * 0.5] for s, v in clean], clean)[0].passed
    checks, _ = compare(record(loss_curve=clean, final_loss=1.0), record(final_loss=1.0), BaselineSpec(), {})
    assert [c.name for c in checks] == ["baseline.final_loss"]
    checks, _ = compare(record(loss_curve=clean), record(loss_curve=[[1, None], [2, None]]), BaselineSpec(), {})
    assert checks == []


def test_curve_fraction_is_a_fraction():
    with pytest.raises(ValueError, match="curve_fraction is a fraction of the steps, at most 1"):
        parse_tolerances(["curve_fraction=1.5"])
    assert parse_tolerances(["curve_fraction=1", "curve=0.2", "curve_abs=0.01"]) == {
        "curve_fraction": 1.0,
        "curve": 0.2,
        "curve_abs": 0.01,
    }


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("curve_fraction: 1.5", "baseline.curve_fraction: must be at most 1"),
        ("curve: -0.1", "baseline.curve: must be at least 0"),
    ],
)
def test_bad_curve_tolerances_in_a_spec_name_the_file_and_field(tmp_path, block, message):
    test_bad_tolerances_in_a_spec_name_the_file_and_field(tmp_path, block, message)


# ---------------------------------------------------------------- recommend


def runs_of(*curves_by_run, duration: float = 10.0) -> list[RunDocument]:
    return [
        RunDocument(
            [SpecResult("s", "passed", final_loss=curve[-1][1], duration=duration + i, loss_curve=curve)],
            run_dir=f"/runs/{i}",
        )
        for i, curve in enumerate(curves_by_run)
    ]


def noisy(seed: int) -> list:
    rng = random.Random(seed)
    return [[step, value * (1 + rng.uniform(-0.03, 0.03))] for step, value in clean_curve()]


def recommended(lines: list[str]) -> dict[str, float]:
    """NAME: VALUE pairs of the table's last column."""
    return {name: float(value) for name, value in re.findall(r"  (\w+): ([\d.e+-]+)$", "\n".join(lines), re.M)}


def test_recommend_prints_the_spread_and_tolerances_that_pass_the_runs_it_saw():
    documents = runs_of(noisy(1), noisy(2), noisy(3))
    lines = recommend(documents)
    assert lines[0].split() == ["spec", "runs", "metric", "seen", "recommended"]
    tolerances = recommended(lines)
    assert set(tolerances) == {"final_loss", "duration", "curve"}
    assert 0.01 <= tolerances["curve"] <= 0.25 and tolerances["duration"] == pytest.approx(0.4)
    spec = BaselineSpec(**tolerances)
    for then in documents:
        for now in documents:
            checks, regressions = compare(now.specs[0], then.specs[0], spec, {})
            assert regressions == [] and all(c.passed for c in checks), checks


def test_recommend_is_absolute_for_values_that_are_not_all_positive_and_skips_specs_without_two_passes():
    documents = [
        RunDocument(
            [SpecResult("neg", "passed", final_loss=-1.0 + 0.01 * i), SpecResult("once", "failed" if i else "passed")]
        )
        for i in range(3)
    ]
    lines = recommend(documents)
    assert recommended(lines) == {"final_loss_abs": 0.04}
    assert lines[-1] == "once: passed in 1 of the runs; at least 2 are needed to see its noise"


def test_the_recommend_command_needs_two_readable_runs(tmp_path, capsys):
    from harness.cli import main

    for i, curve in enumerate((noisy(1), noisy(2))):
        (tmp_path / f"r{i}").mkdir()
        write_results(
            tmp_path / f"r{i}",
            [SpecResult("s", "passed", final_loss=curve[-1][1], duration=10.0, loss_curve=curve)],
            {},
        )
    assert main(["baseline", "recommend", str(tmp_path / "r0"), str(tmp_path / "r1")]) == 0
    assert "curve: " in capsys.readouterr().out
    assert main(["baseline", "recommend", str(tmp_path / "r0")]) == 2
    assert "at least two runs of the same specs" in capsys.readouterr().err
    bad = results_file(tmp_path, "abc")
    assert main(["baseline", "recommend", str(tmp_path / "r0"), bad]) == 2
    assert f"{bad}: specs: expected a list" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["baseline", "recommend", "--help"])
    assert caught.value.code == 0 and "at least two" in capsys.readouterr().out
