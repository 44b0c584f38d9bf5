"""A training log's numbers, kept compactly: what the checks and the record need.

A log of a million lines once took 700 MB as parsed records. Here each entry is two
doubles (step and loss), each bounded metric one double per value; the loss as logged is
kept only where it was not a finite number, for the message that names it. Every check
stays exact: the count, the first and last loss, the first bad loss, every metric value.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

# The curve a log hands out for the record: evenly thinned past this many points.
CURVE_POINTS = 10_000
# Other metrics of the training records (grad norm, learning rate, throughput), for the report:
# at most this many keys, each an evenly spaced sample of at most twice this many points.
SERIES_KEYS = 12
SERIES_POINTS = 2_000
NOT_SERIES = frozenset({"step", "global_step", "epoch"})


class LogError(Exception):
    """The training log is missing or cannot be read; the message says which and why."""


class Series:
    """One metric's (step, value) pairs, decimated as the log grows: memory stays bounded and the sample even."""

    def __init__(self) -> None:
        self.points: list[tuple[float | None, float | None]] = []
        self.stride = 1
        self.seen = 0
        self.last: tuple[float | None, float | None] = (None, None)

    def add(self, step: float | None, value: float | None) -> None:
        point = (step, value)
        if self.seen % self.stride == 0:
            self.points.append(point)
            if len(self.points) > 2 * SERIES_POINTS:
                # Every point kept so far sits at a multiple of the stride: halving keeps multiples of twice it.
                self.points = self.points[::2]
                self.stride *= 2
        self.seen += 1
        self.last = point

    def sample(self) -> list[tuple[float | None, float | None]]:
        """The kept points, the last one logged always among them."""
        return self.points if self.points and self.points[-1] is self.last else [*self.points, self.last]


def number(value: Any) -> float | None:
    """Numbers, and the spellings of NaN and infinity that loggers write as strings.

    An integer beyond a double's range (JSON has no bound on digits) is an infinity, as its spelled-out form is.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def logged_form(raw: Any, limit: int = 60) -> str:
    """How a value was logged, for a message: its repr, cut in the middle past `limit` characters (a 401-digit loss)."""
    text = repr(raw)
    if len(text) <= limit:
        return text
    return f"{text[: limit // 2]}...{text[-10:]} ({len(text)} characters)"


@dataclass(frozen=True)
class LogEntry:
    """One training record: its step, its loss (None when missing or not a number) and the loss as logged."""

    step: float | None
    loss: float | None
    raw_loss: Any

    @property
    def finite(self) -> bool:
        return self.loss is not None and math.isfinite(self.loss)


class TrainingLog:
    """The training entries of one log file (records that carry the loss key), and the numbers
    logged under the `keys` asked for, in any record (eval_loss or train_runtime live in records
    of their own, without the training loss)."""

    def __init__(
        self,
        path: Path,
        fmt: str,
        loss_key: str,
        step_key: str,
        keys: tuple[str, ...] = (),
        notes: list[str] | None = None,
    ):
        self.path = path
        self.format = fmt
        self.notes = list(notes or [])
        self.loss_key = loss_key
        self.step_key = step_key
        self.first_bad: LogEntry | None = None
        # NaN stands for a missing step; a loss that is not a number keeps its logged form in _raw.
        self._steps = array("d")
        self._losses = array("d")
        self._raw: dict[int, Any] = {}
        self._values = {key: array("d") for key in keys}
        # The keys asked for by their steps too: a bounded eval metric is charted with its bound.
        self._checked = {key: Series() for key in keys}
        self._series: dict[str, Series] = {}

    def add(self, record: dict) -> None:
        step = number(record.get(self.step_key))
        if step is not None and not math.isfinite(step):
            step = None  # no step of a run is infinite: a logger's garbage, kept out of every curve
        for key, values in self._values.items():
            value = number(record.get(key))
            if value is not None:
                values.append(value)
                self._checked[key].add(step, value if math.isfinite(value) else None)
        if self.loss_key not in record:
            return
        raw = record[self.loss_key]
        loss = number(raw)
        if loss is None or not math.isfinite(loss):
            self._raw[len(self._losses)] = raw
            if self.first_bad is None:
                self.first_bad = LogEntry(step, loss, raw)
        self._steps.append(math.nan if step is None else step)
        self._losses.append(math.nan if loss is None else loss)
        self._add_series(record, step)

    def _add_series(self, record: dict, step: float | None) -> None:
        for key, value in record.items():
            # type() rather than isinstance: a bool is an int, and no metric.
            if key in (self.loss_key, self.step_key) or key in NOT_SERIES or type(value) not in (int, float):
                continue
            series = self._series.get(key)
            if series is None:
                if len(self._series) >= SERIES_KEYS:
                    continue
                series = self._series[key] = Series()
            as_float = number(value)
            series.add(step, as_float if as_float is not None and math.isfinite(as_float) else None)

    def series(self) -> dict[str, list[tuple[float | None, float | None]]]:
        """Each metric asked for (in any record), then each other one the training records logged, as an evenly
        spaced sample of (step, value); None for NaN or inf."""
        checked = {key: series.sample() for key, series in self._checked.items() if series.seen}
        return checked | {key: series.sample() for key, series in self._series.items() if key not in checked}

    def entry(self, index: int) -> LogEntry:
        index = range(len(self._losses))[index]
        step = self._steps[index]
        step_or_none = None if math.isnan(step) else step
        if index in self._raw:
            raw = self._raw[index]
            return LogEntry(step_or_none, number(raw), raw)
        return LogEntry(step_or_none, self._losses[index], self._losses[index])

    @property
    def entries(self) -> Entries:
        return Entries(self)

    @property
    def final(self) -> LogEntry | None:
        return self.entry(-1) if self._losses else None

    def values(self, key: str) -> Sequence[float]:
        """The numbers logged under `key` in any record, in order (NaN and infinities included: bounds must see
        them)."""
        if key not in self._values:
            raise KeyError(f"{key!r} was not asked for when the log was read (parse_log's keys)")
        return self._values[key]

    def curve(self, max_points: int = CURVE_POINTS) -> list[tuple[float | None, float | None]]:
        """(step, loss) of the entries, evenly thinned to at most `max_points`, the last always kept."""
        count = len(self._losses)
        stride = max(1, -(-count // max_points))
        indices = list(range(0, count, stride))
        if count and indices[-1] != count - 1:
            indices[-1] = count - 1
        return [(e.step, e.loss) for e in map(self.entry, indices)]


class Entries(Sequence[LogEntry]):
    """The entries of a TrainingLog as a read-only sequence, each made when asked for."""

    def __init__(self, log: TrainingLog):
        self._log = log

    def __len__(self) -> int:
        return len(self._log._losses)

    @overload
    def __getitem__(self, index: int) -> LogEntry: ...

    @overload
    def __getitem__(self, index: slice) -> list[LogEntry]: ...

    def __getitem__(self, index: int | slice) -> LogEntry | list[LogEntry]:
        if isinstance(index, slice):
            return [self._log.entry(i) for i in range(len(self))[index]]
        return self._log.entry(index)
