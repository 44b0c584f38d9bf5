"""How well a run scheduled: makespan, the plan's expectation, the bound and the idle device-seconds."""

from __future__ import annotations

from harness.records import SpecResult
from harness.report.schedule import ScheduleFigures, schedule_figures


def ran(spec_id: str, start: float, seconds: float, devices: list[str]) -> SpecResult:
    return SpecResult(id=spec_id, outcome="passed", start_time=start, duration=seconds, devices=devices)


def test_idle_device_seconds_count_every_device_and_packed_runs_once() -> None:
    records = [
        ran("wide", 100.0, 4.0, ["0", "1"]),
        ran("packed_a", 104.0, 6.0, ["0"]),
        ran("packed_b", 105.0, 3.0, ["0"]),  # inside packed_a's span on device 0: counted once
        ran("late", 106.0, 4.0, ["1"]),
        SpecResult(id="skipped", outcome="skipped"),
    ]
    figures = schedule_figures(records, ["0", "1", "2"], plan_expected=9.5, lower_bound=8.0)
    assert figures is not None
    assert figures.makespan == 10.0
    # device 0: busy 0-10; device 1: busy 0-4 and 6-10 (2 idle); device 2: never used (10 idle)
    assert figures.idle_device_seconds == 12.0
    assert figures.to_json() == {
        "makespan_s": 10.0,
        "plan_expected_s": 9.5,
        "lower_bound_s": 8.0,
        "idle_device_s": 12.0,
        "plan_guesses": 0,
    }
    assert ScheduleFigures.from_json(figures.to_json()) == figures
    assert figures.line() == "makespan 10.0 s, plan expected 9.5 s, lower bound 8.0 s; 12.0 idle device-seconds"


def test_a_run_where_nothing_started_has_no_figures() -> None:
    assert schedule_figures([SpecResult(id="s", outcome="skipped")], ["0"], 0.0, 0.0) is None


def test_a_plan_that_went_by_timeouts_says_so() -> None:
    figures = schedule_figures([ran("s", 1.0, 2.0, ["0"])], ["0"], plan_expected=60.0, lower_bound=2.0, plan_guesses=1)
    assert figures is not None and ScheduleFigures.from_json(figures.to_json()) == figures
    assert figures.line() == (
        "makespan 2.0 s, plan expected 60.0 s (from timeouts for 1 runs: no length recorded yet), "
        "lower bound 2.0 s; 0.0 idle device-seconds"
    )
