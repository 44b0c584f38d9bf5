"""Drift: a sustained shift in a series of runs, found by a change-point test and named at its first commit.

The series is one spec's metric over the runs of one device kind and set of versions, in
commit order. The test splits it where two levels fit best and asks how far apart the two
means are, in standard errors of the noise within the levels (a two-sample t statistic).
A shift counts when that statistic passes THRESHOLD, it moved the level by at least
MIN_CHANGE, and the new level has held for at least MIN_AFTER runs: one noisy point is never
a drift. An older shift is history: the search goes on in the runs after it, and a shift is
reported while it is among the last RECENT runs.

Where the shift began is uncertain by a few runs when it is small against the noise. The
named commit is the one with the most probability that the shift happened at it or at most
LATE commits before it (a flat prior over the split, the fitted levels' likelihood), so it
errs late rather than early: the named commit is a safe `--bad` end for `harness bisect`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

THRESHOLD = 5.0
MIN_CHANGE = 0.005
MIN_BEFORE = 8
MIN_AFTER = 3
RECENT = 20
WINDOW = 100
LATE = 2


@dataclass(frozen=True)
class Shift:
    """A new level from `first` (an index into the series) on."""

    first: int
    before: float
    after: float
    noise: float  # standard deviation within the levels
    score: float  # the t statistic
    runs: int  # points at the new level

    @property
    def change(self) -> float:
        """Relative change of the level (absolute where the old level is zero)."""
        return (self.after - self.before) / abs(self.before) if self.before else self.after - self.before

    @property
    def relative_noise(self) -> float:
        return self.noise / abs(self.before) if self.before else self.noise


@dataclass(frozen=True)
class _Split:
    at: int
    rss: float
    before: float
    after: float


def _splits(values: list[float]) -> list[_Split]:
    """Every split leaving MIN_BEFORE points before and MIN_AFTER after, with its residual sum of squares."""
    n = len(values)
    total, squares = [0.0], [0.0]
    for value in values:
        total.append(total[-1] + value)
        squares.append(squares[-1] + value * value)
    out = []
    for k in range(MIN_BEFORE, n - MIN_AFTER + 1):
        m1, m2 = total[k] / k, (total[n] - total[k]) / (n - k)
        rss = (squares[k] - k * m1 * m1) + (squares[n] - squares[k] - (n - k) * m2 * m2)
        out.append(_Split(k, max(rss, 0.0), m1, m2))
    return out


def _best(values: list[float]) -> Shift | None:
    """The split that fits two levels best, with its statistic; None when the series is too short."""
    splits = _splits(values)
    if not splits:
        return None
    best = min(splits, key=lambda s: s.rss)
    n = len(values)
    scale = max(abs(best.before), abs(best.after), 1e-300)
    # A noise floor: runs that repeat bit for bit still need a change of MIN_CHANGE to count.
    noise = max(math.sqrt(best.rss / (n - 2)), scale * 1e-9)
    score = abs(best.after - best.before) / (noise * math.sqrt(1 / best.at + 1 / (n - best.at)))
    variance = noise * noise
    weight = {s.at: math.exp(-(s.rss - best.rss) / (2 * variance)) for s in splits}
    named = max(weight, key=lambda at: sum(weight.get(at - back, 0.0) for back in range(LATE + 1)))
    return Shift(named, best.before, best.after, noise, score, n - named)


def _significant(shift: Shift) -> bool:
    return shift.score >= THRESHOLD and abs(shift.change) >= MIN_CHANGE


def detect(values: list[float]) -> Shift | None:
    """The recent sustained shift in `values` (oldest first), or None; indices are into `values`."""
    start = max(0, len(values) - WINDOW)
    while True:
        segment = values[start:]
        shift = _best(segment)
        if shift is None or not _significant(shift):
            return None
        first = start + shift.first
        if len(values) - first <= RECENT:
            return Shift(first, shift.before, shift.after, shift.noise, shift.score, len(values) - first)
        start = first


def describe(metric: str, shift: Shift, commit: str | None) -> str:
    """`final_loss +4.1% since abc1234, over 3 runs; noise ±0.8%`."""
    since = f" since {commit[:7]}" if commit else ""
    runs = f"{shift.runs} run{'s' if shift.runs != 1 else ''}"
    if shift.before:
        return f"{metric} {shift.change:+.1%}{since}, over {runs}; noise ±{shift.relative_noise:.1%}"
    return f"{metric} {shift.after - shift.before:+.4g}{since}, over {runs}; noise ±{shift.noise:.3g}"
