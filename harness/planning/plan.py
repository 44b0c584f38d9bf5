"""The run plan: which specs run, on how many devices, in what order, and how long at best.

Several orders (longest, widest, largest device-seconds first) are simulated over the
expected durations (recorded by earlier runs, else the spec's timeout) and the one that
finishes first is kept. The same plan is what `harness plan` prints and what the pytest
plugin orders its items by.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from harness.backends import skip_reason
from harness.devices.memory import DEFAULT_HEADROOM, device_capacity, memory_request, memory_skip
from harness.devices.packing import Devices
from harness.devices.serving import free_by
from harness.devices.visible import Inventory
from harness.spec.compared import groups
from harness.spec.files import in_tier
from harness.spec.model import Spec


@dataclass(frozen=True)
class Planned:
    spec: Spec
    devices: int
    expected: float
    recorded: bool
    skip: str | None
    priority: int = 0
    memory: int | None = None  # MiB per device when declared; None: the devices are held whole
    placed: tuple[str, ...] = ()  # where the simulation put it, and when it starts there
    start: float = 0.0


@dataclass(frozen=True)
class Plan:
    inventory: Inventory
    runs: list[Planned]
    skipped: list[Planned]
    order: str = ""
    simulated: float = 0.0
    capacity: dict[str, int | None] = field(default_factory=dict)
    # Runs the simulation let go at once: the run's own worker count (0: none, one run at a time).
    workers: int = 1
    # Why a spec outside the tier runs (the partner of a compared spec).
    notes: list[str] = field(default_factory=list)
    # Runs the plan could place together with no bound on workers (one per device, more where specs share).
    at_once: int = 1

    def run_order(self) -> RunOrder:
        return RunOrder(
            {p.spec.id: (p.priority, p.expected) for p in self.runs}, tuple(p.spec.id for p in self.skipped)
        )

    @property
    def lower_bound(self) -> float:
        """No schedule beats this: runs that can overlap no other run (a spec holding every device
        whole) one after another, then the largest of: the device-seconds of the others spread
        over every device (a run that declares memory counting for its share of each device's
        room: device-memory-seconds), their seconds spread over the workers (each run holds one),
        and the longest chain of runs no two of which can overlap (the longest run alone, or a
        whole-device run beside one that needs memory on every device)."""
        count = max(1, self.inventory.count)
        rooms = [c for c in self.capacity.values() if c is not None]
        room = max(rooms) if rooms else None
        alone = _alone(self.runs, count, room)
        rest = [p for p in self.runs if not any(p is a for a in alone)]
        serial = sum(p.expected for p in alone)
        if not rest:
            return serial
        area = sum(p.devices * p.expected * share(p.memory, self.capacity) for p in rest)
        slots = sum(p.expected for p in rest) / max(1, self.workers)
        return serial + max(area / count, slots, _exclusive_chain(rest, count, room))

    def lower_bound_over(self, took: Mapping[str, float]) -> float:
        """The bound for the runs that ran (spec id -> the seconds each took), at the lengths they took:
        the plan's own bound rests on what it expected, which before any length is recorded is the timeouts."""
        ran = [replace(p, expected=took[p.spec.id]) for p in self.runs if p.spec.id in took]
        return replace(self, runs=ran).lower_bound


@dataclass(frozen=True)
class RunOrder:
    """What collection needs of the plan, sent to xdist workers as plain data (they never plan):
    each runnable spec's place in the order and expected seconds, and the specs it skips."""

    runs: dict[str, tuple[int, float]]
    skipped: tuple[str, ...] = ()

    def kept(self, spec_id: str) -> bool:
        """In the plan: runnable here, or skipped with a reason (the rest were deselected)."""
        return spec_id in self.runs or spec_id in self.skipped

    def priority(self, spec_id: str) -> int:
        return self.runs[spec_id][0] if spec_id in self.runs else 0

    def expected(self, spec_id: str) -> float:
        return self.runs[spec_id][1] if spec_id in self.runs else 0.0

    def to_wire(self) -> dict[str, Any]:
        return {"runs": {i: list(v) for i, v in self.runs.items()}, "skipped": list(self.skipped)}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> RunOrder:
        return cls({i: (int(p), float(e)) for i, (p, e) in data["runs"].items()}, tuple(data["skipped"]))


def _conflict(a: Planned, b: Planned, count: int, room: int | None) -> bool:
    """Whether two runs can never run at once: they must share a device (more devices between them
    than there are) and cannot share it (either holds it whole, or their memory exceeds the largest room)."""
    if a.devices + b.devices <= count:
        return False
    return a.memory is None or b.memory is None or room is None or a.memory + b.memory > room


def _alone(runs: list[Planned], count: int, room: int | None) -> list[Planned]:
    """The runs that can overlap no other run: any schedule runs them one after another."""
    return [p for p in runs if all(_conflict(p, q, count, room) for q in runs if q is not p)]


CHAIN_SEEDS = 32


def _exclusive_chain(runs: list[Planned], count: int, room: int | None) -> float:
    """The longest total of runs that pairwise conflict (so run one after another), found greedily
    from each of the longest runs: any such set is a valid bound, the largest is only the tightest."""
    ordered = sorted(runs, key=lambda p: -p.expected)
    best = 0.0
    for seed in ordered[:CHAIN_SEEDS]:
        chain = [seed]
        for p in ordered:
            if p is not seed and all(_conflict(p, q, count, room) for q in chain):
                chain.append(p)
        best = max(best, sum(p.expected for p in chain))
    return best


def share(memory: int | None, capacity: Mapping[str, int | None]) -> float:
    """The part of a device one run takes: its memory over the devices' mean room, or all of it."""
    rooms = [c for c in capacity.values() if c is not None and c > 0]
    if memory is None or not rooms:
        return 1.0
    return min(1.0, memory / (sum(rooms) / len(rooms)))


@dataclass
class Schedule:
    """A simulated run: when it ends, where and when each job started, and how many held devices at once."""

    makespan: float
    placed: list[tuple[tuple[str, ...], float]]
    concurrency: int


def simulate(
    jobs: list[tuple[int, float, int | None]], capacity: Mapping[str, int | None], slots: int | None = None
) -> Schedule:
    """`jobs` (devices, seconds, MiB per device or None) served in this order by the pool's rule.

    The rule is the one the lease pool applies (`devices/serving.py`), over the same `packing.Devices`:
    start waiters in order while they fit; the first that does not fit reserves the time its devices
    free up, and a later waiter may go first only if it ends by then. At most `slots` runs at once
    (the run's workers; None: no limit).
    """
    devices = Devices.empty(capacity)
    now, peak = 0.0, 0
    running: list[tuple[float, int, tuple[str, ...], int | None]] = []
    placed: list[tuple[tuple[str, ...], float]] = [((), 0.0)] * len(jobs)
    pending = list(range(len(jobs)))
    while pending:
        kept: list[int] = []
        reserved: float | None = None
        for position, index in enumerate(pending):
            if slots is not None and len(running) >= slots:
                kept += pending[position:]  # every worker busy: the rest wait for one, not for devices
                break
            k, seconds, memory = jobs[index]
            chosen = devices.choose(k, memory)
            if chosen is not None and (reserved is None or now + seconds <= reserved):
                devices.take(chosen, memory)
                heapq.heappush(running, (now + seconds, index, chosen, memory))
                placed[index] = (chosen, now)
                continue
            kept.append(index)
            if reserved is None and chosen is None:
                reserved = free_by([(end, held, mib) for end, _, held, mib in running], devices, k, memory)
        pending = kept
        peak = max(peak, sum(1 for job in running if job[2]))
        if not running:
            break  # what is left can never start here (the plan skips such specs)
        end = running[0][0]
        while running and running[0][0] == end:
            _, _, chosen, memory = heapq.heappop(running)
            devices.give(chosen, memory)
        now = end
    makespan = max([now, *(r[0] for r in running)])
    return Schedule(makespan, placed, peak)


ORDERS = {
    "longest first": lambda p: (-p.expected, -p.devices),
    "widest first": lambda p: (-p.devices, -p.expected),
    "largest area first": lambda p: (-max(p.devices, 1) * p.expected, -p.devices),
    # A run holding devices whole needs them idle, which a device packed with declared runs
    # seldom is again: started first, it does not wait for the whole run to drain.
    "whole devices first, then longest": lambda p: (p.memory is not None, -p.expected, -p.devices),
}


SEARCH, SEARCH_WORK = 40, 250_000


def _move_last_earlier(
    order: list[Planned], schedule: Schedule, capacity: Mapping[str, int | None], workers: int, budget: int
) -> tuple[bool, list[Planned], Schedule]:
    """Hill-climb: move one of the last-ending runs to the front or halfway there while the makespan shrinks."""
    tried: set[tuple[int, int]] = set()
    improved = False
    while budget > 0:
        ends = sorted(range(len(order)), key=lambda i: -(schedule.placed[i][1] + order[i].expected))
        moves = [
            (i, target)
            for i in ends[:3]
            for target in (0, i // 2)
            if target < i and (id(order[i]), target) not in tried
        ]
        for i, target in moves[:budget]:
            tried.add((id(order[i]), target))
            budget -= 1
            moved = [*order[:target], order[i], *order[target:i], *order[i + 1 :]]
            candidate = simulate([(p.devices, p.expected, p.memory) for p in moved], capacity, workers)
            if candidate.makespan < schedule.makespan - 1e-9:
                order, schedule, improved = moved, candidate, True
                break
        else:
            break
    return improved, order, schedule


def make_plan(
    specs: list[Spec],
    inventory: Inventory,
    durations: dict[str, float],
    tier: str | None = None,
    peaks: Mapping[str, float] | None = None,
    headroom: float = DEFAULT_HEADROOM,
    workers: Callable[[int, int], int] | None = None,
) -> Plan:
    """Order the runnable specs by whichever rule the simulation expects to finish first.

    Longest-first keeps the tail short; widest-first avoids draining devices for a wide spec
    in the middle of the run. Which wins depends on the mix, so each is simulated. Specs that
    declare memory share devices in the simulation as they will in the run, and no more runs
    go at once than the run's workers: `workers(at_once, runs)` says how many the run starts
    for `runs` specs of which the plan could place `at_once` together (default: that many).
    """
    capacity = device_capacity(inventory, headroom)
    planned = []
    group_of = groups(specs)
    in_run = {spec.id for spec in specs if in_tier(spec, tier)}
    # A comparison needs both sides in one run: a partner outside the tier comes along.
    partners_of = {other: spec_id for spec_id in sorted(in_run) for other in group_of.get(spec_id, ())}
    notes = [
        f"{spec.id}: outside tier {tier}, runs as the partner of {partners_of[spec.id]} (parity or repeat)"
        for spec in specs
        if spec.id not in in_run and spec.id in partners_of
    ]
    for spec in specs:
        if spec.id not in in_run and spec.id not in partners_of:
            continue
        recorded = spec.id in durations
        expected = durations[spec.id] if recorded else spec.timeout
        memory = memory_request(spec, peaks or {}, headroom) if spec.gpus else None
        skip = skip_reason(spec, inventory) or memory_skip(spec, memory, capacity)
        planned.append(Planned(spec, spec.gpus, expected, recorded, skip, memory=memory))
    runnable = [p for p in planned if p.skip is None]
    # One worker per run that can hold devices at once (more than the devices when runs share them).
    widest = simulate([(p.devices, p.expected, p.memory) for p in runnable], capacity).concurrency
    at_once = max(1, inventory.count, widest)
    started = workers(at_once, len(runnable)) if workers is not None else at_once
    slots = max(1, started)
    rooms = [c for c in capacity.values() if c is not None]
    # Small plans can afford a search: longest-first with noise (a wide run counts for more,
    # since it waits for a drain), then the best order's last-ending run moved earlier. The
    # work per simulation grows with the square of the runs, so a thousand specs get none.
    budget = min(SEARCH, SEARCH_WORK // max(1, len(runnable)) ** 2)
    # Each order also with the runs that overlap nothing first: they need every device idle,
    # which is sure only at the start; later they wait for a drain that idles the devices.
    alone = {id(p) for p in _alone(runnable, inventory.count, max(rooms) if rooms else None)} if budget else set()
    orders = {
        **ORDERS,
        "largest memory-area first": lambda p: (
            -max(p.devices, 1) * p.expected * share(p.memory, capacity),
            -p.devices,
        ),
        "machine-wide first, then longest": lambda p: (p.devices < inventory.count, -p.expected),
    }
    candidates = [(name, sorted(runnable, key=lambda p: (*key(p), p.spec.id))) for name, key in orders.items()]
    if alone:
        candidates += [
            (f"{name}, runs that overlap nothing first", sorted(order, key=lambda p: id(p) not in alone))
            for name, order in candidates
        ]
    rng = random.Random(0)
    for _ in range(budget):
        noisy = {id(p): -p.expected * rng.uniform(0.5, 1.5) * (1 + (p.devices > 1) * rng.random()) for p in runnable}
        candidates.append(
            ("longest first, perturbed", sorted(runnable, key=lambda p: (id(p) not in alone, noisy[id(p)])))
        )
    best_name, best, best_schedule = "", runnable, Schedule(float("inf"), [], 0)
    for name, order in candidates:
        schedule = simulate([(p.devices, p.expected, p.memory) for p in order], capacity, slots)
        if schedule.makespan < best_schedule.makespan - 1e-9:
            best_name, best, best_schedule = name, order, schedule
    improved, best, best_schedule = _move_last_earlier(best, best_schedule, capacity, slots, budget)
    best_name += ", last-ending runs moved earlier" if improved else ""
    together = side_by_side(best, group_of)
    if [id(p) for p in together] != [id(p) for p in best]:
        best = together
        best_schedule = simulate([(p.devices, p.expected, p.memory) for p in best], capacity, slots)
        best_name += ", compared specs side by side"
    runs = [
        replace(p, priority=i, placed=best_schedule.placed[i][0], start=best_schedule.placed[i][1])
        for i, p in enumerate(best)
    ]
    return Plan(
        inventory,
        runs,
        [p for p in planned if p.skip is not None],
        best_name,
        best_schedule.makespan if runs else 0.0,
        capacity,
        started,
        notes,
        at_once,
    )


def side_by_side(order: list[Planned], group_of: Mapping[str, set[str]]) -> list[Planned]:
    """The order with the specs compared with each other (parity, repeats) moved up to the first of
    them, longest first: they start together and so finish close together, on the same code and machine."""
    out: list[Planned] = []
    placed: set[int] = set()
    for p in order:
        if id(p) in placed:
            continue
        group = group_of.get(p.spec.id)
        if group is None:
            out.append(p)
            continue
        members = sorted((q for q in order if q.spec.id in group), key=lambda q: -q.expected)
        out += members
        placed.update(id(q) for q in members)
    return out
