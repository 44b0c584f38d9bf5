"""Drift: the change-point test over a spec's runs in commit order (harness.history.drift)."""

from __future__ import annotations

import random

import pytest

from harness.history.drift import MIN_AFTER, RECENT, describe, detect

STEP_AT = 60


def _history(seed: int, noise: float, step: float = 0.03, commits: int = 100) -> list[float]:
    """A metric of 1.0 with Gaussian noise (`noise` is the band holding 95% of the runs: two standard deviations)."""
    rng = random.Random(seed)
    return [(1 + rng.gauss(0, noise / 2)) * (1 + step if i >= STEP_AT else 1) for i in range(commits)]


def _alerts(values: list[float]) -> set[int]:
    """The commits named by the test run after each commit, as it runs after each run."""
    return {shift.first for n in range(1, len(values) + 1) if (shift := detect(values[:n])) is not None}


@pytest.mark.parametrize("seed", range(20))
def test_a_three_percent_step_in_two_percent_noise_is_named_at_its_commit(seed: int) -> None:
    named = _alerts(_history(seed, noise=0.02))
    assert named & {60, 61, 62}, named
    assert len(named - {60, 61, 62}) <= 1, named


def test_noise_alone_raises_no_alert() -> None:
    false = sum(len(_alerts(_history(seed, noise=0.02, step=0.0))) for seed in range(20))
    assert false <= 2


def test_one_outlier_is_not_a_drift() -> None:
    values = [1.0 + 0.001 * (i % 3) for i in range(40)]
    values[-1] = 1.5
    assert detect(values) is None
    values += [1.5] * (MIN_AFTER - 1)
    shift = detect(values)
    assert shift is not None and shift.first == 39 and shift.runs == MIN_AFTER


def test_an_old_shift_is_the_new_normal() -> None:
    values = [1.0 + 0.001 * (i % 3) for i in range(30)] + [1.2 + 0.001 * (i % 3) for i in range(RECENT + 5)]
    assert detect(values) is None


def test_runs_that_repeat_bit_for_bit_need_a_real_change() -> None:
    assert detect([2.0] * 30 + [2.0000001] * 5) is None
    shift = detect([2.0] * 30 + [2.1] * 5)
    assert shift is not None and shift.first == 30 and abs(shift.change - 0.05) < 1e-9


def test_the_summary_line() -> None:
    shift = detect([1.0, 1.01, 0.99] * 10 + [1.041, 1.05, 1.032])
    assert shift is not None
    text = describe("final_loss", shift, "abc1234def")
    assert text.startswith("final_loss +4.1% since abc1234, over 3 runs; noise ±0.8%"), text
