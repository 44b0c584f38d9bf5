"""A device pool shared by every xdist worker of a run: a JSON file under a file lock.

xdist has no resource-aware scheduling and its worker ids are not stable slots, so the
devices are not tied to workers at all: each spec leases k devices from this pool for
the length of its run. A lease is owned by a live process (pid + start time, so a reused
pid is not mistaken for its predecessor); a holder found dead is dropped by the next
reader, which is how a worker killed with SIGKILL gives its devices back.

Waiters are served in plan order (priority, then arrival). The first waiter that does not
fit reserves the devices it is waiting for; a later, smaller waiter may start before it
only if it is expected to finish before those devices would have become free anyway
(EASY backfilling), so a k-device spec is never starved by a stream of 1-device specs and
devices do not idle while it waits.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from filelock import FileLock

from .files import KeptFileWarning, atomic_write_text, read_json

POLL_SECONDS = 0.02
HOLDER_KEYS = {"token", "owner", "name", "start", "expected"}
WAITER_KEYS = {"token", "owner", "name", "k", "priority", "ticket", "expected"}
FIRST_WAVE_GRACE = 3.0


def _process_key(pid: int) -> list:
    try:
        return [pid, psutil.Process(pid).create_time()]
    except psutil.Error:
        return [pid, 0.0]


def _alive(key: list) -> bool:
    """The same process (not a reuse of its pid) and not a zombie waiting to be reaped."""
    pid, started = key
    try:
        process = psutil.Process(pid)
        return process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class Lease:
    """Devices held by one run until `release()` (or until its owner dies)."""

    pool: LeasePool
    devices: tuple[str, ...]
    token: str
    waited: float

    def attach(self, pgid: int) -> None:
        """Remember the run's process group, so a clean-up can end it if its owner is gone."""
        self.pool._update(lambda state: [h.__setitem__("pgid", pgid) for h in state["holders"].values() if h["token"] == self.token])

    def release(self) -> None:
        self.pool._update(lambda state: [state["holders"].pop(d) for d in list(state["holders"]) if state["holders"][d]["token"] == self.token])


class LeasePool:
    """The devices of one run directory, leased by any process that opens the same state file."""

    def __init__(self, state_file: Path, devices: tuple[str, ...], first_wave: int = 0):
        self.state_file = Path(state_file)
        self.devices = devices
        self.first_wave = first_wave
        self._lock = FileLock(str(self.state_file) + ".lock")

    def _read(self) -> dict:
        """The pool's state with dead holders and waiters dropped; a state file that is not one
        (garbage, another shape) reads as a fresh pool, with one warning, and is replaced on the next write."""
        state: dict | None = read_json(self.state_file, "device lease state")
        if state is None:
            return self._fresh()
        try:
            if not all(HOLDER_KEYS <= h.keys() for h in state["holders"].values()) or not all(WAITER_KEYS <= w.keys() for w in state["queue"]):
                raise KeyError("a holder or waiter without its fields")
            state["holders"] = {d: h for d, h in state["holders"].items() if _alive(h["owner"])}
            state["queue"] = [w for w in state["queue"] if _alive(w["owner"])]
            if not (isinstance(state["tickets"], int) and isinstance(state["arrived"], list) and isinstance(state["opened"], (int, float))):
                raise TypeError("a counter of the wrong type")
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            warnings.warn(f"{self.state_file}: the device lease state is unreadable ({type(error).__name__}: {error}); started afresh", KeptFileWarning, stacklevel=2)
            return self._fresh()
        return state

    @staticmethod
    def _fresh() -> dict:
        return {"holders": {}, "queue": [], "tickets": 0, "arrived": [], "opened": time.time()}

    def _write(self, state: dict) -> None:
        atomic_write_text(self.state_file, json.dumps(state))

    def _update(self, change) -> dict:
        with self._lock:
            state = self._read()
            change(state)
            self._write(state)
            return state

    def holders(self) -> dict[str, dict]:
        """Who holds which device now (live owners only)."""
        with self._lock:
            return self._read()["holders"]

    def snapshot(self) -> dict:
        """Holders and waiters for display, without the lock: the file is replaced whole, and a
        progress line must not slow down the workers that lease."""
        return self._read()

    @contextmanager
    def lease(self, count: int, name: str, priority: int = 0, expected: float = 0.0) -> Iterator[Lease]:
        lease = self.acquire(count, name, priority, expected)
        try:
            yield lease
        finally:
            lease.release()

    def acquire(self, count: int, name: str, priority: int = 0, expected: float = 0.0) -> Lease:
        """Block until `count` distinct devices are this caller's."""
        if count > len(self.devices):
            raise ValueError(f"{name} needs {count} devices; the pool has {len(self.devices)}")
        owner = _process_key(os.getpid())
        began = time.monotonic()

        def enqueue(state: dict) -> None:
            state["tickets"] += 1
            state["arrived"].append(priority)
            state["queue"].append({"token": f"{owner[0]}-{state['tickets']}", "owner": owner, "name": name, "k": count, "priority": priority, "ticket": state["tickets"], "expected": expected})

        token = self._update(enqueue)["queue"][-1]["token"]
        try:
            while True:
                with self._lock:
                    state = self._read()
                    granted = self._grant(state, token, time.time())
                    if granted is not None:
                        self._write(state)
                        return Lease(self, granted, token, time.monotonic() - began)
                time.sleep(POLL_SECONDS)
        except BaseException:
            # Interrupted while waiting (Ctrl-C, a timeout): leave no phantom waiter behind.
            self._update(lambda state: state.__setitem__("queue", [w for w in state["queue"] if w["token"] != token]))
            raise

    def _grant(self, state: dict, token: str, now: float) -> tuple[str, ...] | None:
        """Take devices for `token` if the serving order lets it start now; None if it must wait."""
        mine = next(w for w in state["queue"] if w["token"] == token)
        if self._first_wave_missing(state, mine["priority"], now):
            return None
        free = [d for d in self.devices if d not in state["holders"]]
        ends = sorted(now + max(0.0, h["start"] + h["expected"] - now) for h in state["holders"].values())
        reserved_until: float | None = None
        spare = len(free)
        for waiter in sorted(state["queue"], key=lambda w: (w["priority"], w["ticket"])):
            fits = waiter["k"] <= spare
            if reserved_until is not None:
                fits = fits and now + waiter["expected"] <= reserved_until
            if waiter["token"] == token:
                if not fits:
                    return None
                taken = tuple(free[: waiter["k"]])
                state["queue"].remove(waiter)
                for device in taken:
                    state["holders"][device] = {"token": token, "owner": waiter["owner"], "name": waiter["name"], "start": now, "expected": waiter["expected"]}
                return taken
            if fits:
                spare -= waiter["k"]
            elif reserved_until is None:
                # The first waiter that does not fit: when will enough devices be free for it?
                missing = waiter["k"] - spare
                reserved_until = ends[missing - 1] if 0 < missing <= len(ends) else now
        return None

    def _first_wave_missing(self, state: dict, priority: int, now: float) -> bool:
        """Whether a higher-priority spec of the first wave has not asked yet.

        Workers start a few hundred milliseconds apart; without this, whichever asks first
        wins, and a wide spec planned first can end up waiting behind a long narrow one.
        """
        if now - state["opened"] > FIRST_WAVE_GRACE:
            return False
        arrived = set(state["arrived"])
        return any(p not in arrived for p in range(min(priority, self.first_wave)))

    def stray_groups(self) -> list[int]:
        """Process groups of leases whose runs may outlive their owner; for the final clean-up."""
        with self._lock:
            holders = self._read()["holders"]
        return sorted({h["pgid"] for h in holders.values() if "pgid" in h})
