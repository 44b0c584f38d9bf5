"""How well a run scheduled: its makespan against the plan's expectation and the lower bound, and the
device-seconds no run used (specs waiting on each other or on the harness)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.records import SpecResult


@dataclass(frozen=True)
class ScheduleFigures:
    makespan: float  # first run's start to last run's end
    plan_expected: float  # the plan's simulated makespan
    lower_bound: float  # the plan's lower bound, over the lengths the runs took
    idle_device_seconds: float  # over the makespan, the seconds each device ran nothing, summed
    plan_guesses: int = 0  # runs the plan had no recorded length for (it went by their timeouts)

    def to_json(self) -> dict[str, float]:
        return {
            "makespan_s": round(self.makespan, 3),
            "plan_expected_s": round(self.plan_expected, 3),
            "lower_bound_s": round(self.lower_bound, 3),
            "idle_device_s": round(self.idle_device_seconds, 3),
            "plan_guesses": self.plan_guesses,
        }

    @classmethod
    def from_json(cls, data: dict[str, float]) -> ScheduleFigures:
        return cls(
            data.get("makespan_s", 0.0),
            data.get("plan_expected_s", 0.0),
            data.get("lower_bound_s", 0.0),
            data.get("idle_device_s", 0.0),
            int(data.get("plan_guesses", 0)),
        )

    def line(self) -> str:
        guessed = f" (from timeouts for {self.plan_guesses} runs: no length recorded yet)" if self.plan_guesses else ""
        return (
            f"makespan {self.makespan:.1f} s, plan expected {self.plan_expected:.1f} s{guessed}, "
            f"lower bound {self.lower_bound:.1f} s; {self.idle_device_seconds:.1f} idle device-seconds"
        )


def schedule_figures(
    records: Iterable[SpecResult],
    devices: Sequence[str],
    plan_expected: float,
    lower_bound: float,
    plan_guesses: int = 0,
) -> ScheduleFigures | None:
    """The figures of the runs that started (None when none did); `devices` are the run's device names,
    `lower_bound` the plan's bound over the lengths these runs took."""
    spans = [(r.start_time, r.start_time + r.duration, r.devices) for r in records if r.start_time > 0]
    if not spans:
        return None
    first, last = min(s for s, _, _ in spans), max(e for _, e, _ in spans)
    busy: dict[str, list[tuple[float, float]]] = {}
    for start, end, held in spans:
        for device in held:
            busy.setdefault(device, []).append((start, end))
    makespan = last - first
    known = set(devices)
    idle = makespan * len(known - busy.keys()) + sum(
        makespan - _covered(intervals) for device, intervals in busy.items() if device in known
    )
    return ScheduleFigures(makespan, plan_expected, lower_bound, max(0.0, idle), plan_guesses)


def _covered(intervals: list[tuple[float, float]]) -> float:
    """Seconds inside the union of the intervals (runs packed on one device overlap)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total
