"""Who of a device pool's waiters may start now: the serving order, over the pool's state as plain data.

Waiters are served in order of their position in their own run's plan, then arrival, so
concurrent runs interleave (each run's n-th spec before any run's n+1-th) and none starves
behind another. The first waiter that cannot start reserves the time its devices free up;
a later one may start before it only if it is expected to end by then (EASY backfilling),
so a wide or exclusive spec is never starved by a stream of small ones. A run's first wave
(the first item of each of its workers) is let in plan order, not in the order its workers
happen to start.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from harness.devices.packing import Devices

FIRST_WAVE_GRACE = 3.0


def grant(
    state: dict, token: str, now: float, capacity: Mapping[str, int | None], first_wave: int
) -> tuple[str, ...] | None:
    """Take devices for `token` (moving it from the queue to the holders) if the serving order lets it
    start now; None if it must wait. `capacity`: the asking run's view of its devices' room."""
    mine = next(w for w in state["queue"] if w["token"] == token)
    if _first_wave_missing(state, mine, now, first_wave):
        return None
    devices = Devices.empty({**state["capacity"], **capacity})
    for holder in state["holders"].values():
        devices.take(holder["devices"], holder["memory"])
    reserved_until: float | None = None
    for waiter in sorted(state["queue"], key=lambda w: (w["priority"], w["ticket"])):
        chosen = devices.choose(waiter["k"], waiter["memory"], waiter["allowed"], waiter.get("avoid", ()))
        fits = chosen is not None and (reserved_until is None or now + waiter["expected"] <= reserved_until)
        if waiter["token"] == token:
            if not fits or chosen is None:
                return None
            state["queue"].remove(waiter)
            state["holders"][token] = {
                key: waiter[key] for key in ("token", "owner", "name", "run", "memory", "expected")
            } | {"devices": list(chosen), "start": now}
            return chosen
        if fits and chosen is not None:
            devices.take(chosen, waiter["memory"])
        elif reserved_until is None and chosen is None:
            holders = state["holders"].values()
            ending = [(h["start"] + h["expected"], h["devices"], h["memory"]) for h in holders]
            reserved_until = max(now, free_by(ending, devices, waiter["k"], waiter["memory"], waiter["allowed"]))
    return None


def _first_wave_missing(state: dict, mine: dict, now: float, first_wave: int) -> bool:
    """Whether a higher-priority spec of this run's first wave has not asked yet.

    Workers start a few hundred milliseconds apart; without this, whichever asks first
    wins, and a wide spec planned first can end up waiting behind a long narrow one.
    """
    run = state["runs"].get(mine["run"])
    if run is None or now - run["opened"] > FIRST_WAVE_GRACE:
        return False
    arrived = set(run["arrived"])
    return any(p not in arrived for p in range(min(mine["priority"], first_wave)))


def free_by(
    ending: Iterable[tuple[float, Sequence[str], int | None]],
    devices: Devices,
    k: int,
    memory: int | None,
    allowed: Sequence[str] | None = None,
) -> float:
    """When `k` devices (`memory` MiB each, or whole) free up as the holders end in order: each holder is
    (its expected end, its devices, its MiB per device or None). Infinity when never."""
    ahead = devices.copy()
    for end, held, held_memory in sorted(ending, key=lambda holder: holder[0]):
        ahead.give(held, held_memory)
        if ahead.choose(k, memory, allowed) is not None:
            return end
    return math.inf
