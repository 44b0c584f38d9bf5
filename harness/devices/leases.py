"""The device pool: a JSON file under a file lock, shared by every process that leases the same devices.

Real devices are one machine's, whoever runs on them, so their pool is machine-wide (see
`caches.lease_dir`) and keyed by device identity (the UUID where the vendor tool gives one,
else the index): every run of the harness, and every xdist worker of each, leases from
it. Fake devices exist only inside one run, so their pool lives in its run directory.

A lease is owned by a live process (pid + start time, so a reused pid is not mistaken for
its predecessor) and by its run's process group once it starts: it lives while either has a
live process, so a harness killed with SIGKILL whose run ignores SIGTERM does not give its
device to the next run while that run still computes on it. A holder found dead is dropped by
the next reader, which is how a worker killed with SIGKILL gives its devices back. Each holder
is a file of its own beside the state file (`<state>.held/<token>.json`), the one truth about
who holds what: the state file (the queue, and a copy of the holders for display) may be
deleted, garbled or made unwritable without a device being handed out twice. A run holds its devices whole, or, when it
declares memory per device, shares them with other declared runs while their sum fits
(`packing.py`).

Who goes next is `serving.py`'s rule.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from harness.atomic import KeptFileWarning, atomic_write_text, read_json
from harness.caches import lease_dir
from harness.devices.holders import is_alive, process_key, read_holders, write_holders
from harness.devices.memory import device_capacity, device_keys
from harness.devices.packing import Devices
from harness.devices.serving import FIRST_WAVE_GRACE, grant
from harness.devices.visible import GPU_KINDS, Inventory
from harness.process import group_key

# A waiter looks for a change this often (a stat: cheap), and judges the queue again on a change, or at
# least every REJUDGE_SECONDS, since some of what decides depends on time and on whether holders still live.
POLL_SECONDS = 0.005
REJUDGE_SECONDS = 0.25
# The lock is held for a millisecond or two; filelock's default retry (50 ms) would add that much to a
# hand-over whenever a releaser and the waiters' polls meet at the lock.
LOCK_POLL_SECONDS = 0.002
WAITER_KEYS = {"token", "owner", "name", "run", "k", "memory", "allowed", "priority", "ticket", "expected"}
# How long a run's first-wave entry is kept: longer than a run of specs is expected to last.
RUN_MEMORY_SECONDS = 24 * 3600.0


class LeaseError(Exception):
    """The pool's files cannot be written (a lease folder that is a file, read-only, immutable): one line."""


@dataclass
class Lease:
    """Devices held by one run until `release()` (or until its owner dies)."""

    pool: LeasePool
    devices: tuple[str, ...]
    token: str
    waited: float
    memory: int | None = None
    # Other runs' specs that held devices this lease waited for.
    waited_for: list[str] = field(default_factory=list)
    released: bool = field(default=False, init=False)

    def attach(self, pgid: int) -> None:
        """Tie the lease to the run's process group too: it outlives its owner while the run lives."""
        group = group_key(pgid)
        try:
            self.pool._update(
                lambda state: [
                    h.__setitem__("group", group) for h in state["holders"].values() if h["token"] == self.token
                ]
            )
        except LeaseError:
            pass  # the holder's own file was written first; only the shared copy is stale

    def release(self) -> None:
        """Give the devices back (once: a second call does nothing)."""
        if self.released:
            return
        self.released = True
        try:
            self.pool._update(lambda state: state["holders"].pop(self.token, None))
        except LeaseError as error:
            # The holder's own file says who holds what: once it is gone the devices are free.
            (self.pool.held_dir / f"{self.token}.json").unlink(missing_ok=True)
            warnings.warn(f"{error}; the lease was given back through its own file", KeptFileWarning, stacklevel=2)


class LeasePool:
    """Devices leased by any process that opens the same state file.

    `devices` are this run's names for them (what its children see); `keys` their
    machine-wide identity; `capacity` the MiB declared runs may share on each (None: unknown,
    so each device is only held whole); `run` tells this run's waiters from other runs'.
    """

    def __init__(
        self,
        state_file: Path,
        devices: tuple[str, ...],
        first_wave: int = 0,
        *,
        keys: Mapping[str, str] | None = None,
        capacity: Mapping[str, int | None] | None = None,
        run: str = "",
    ):
        self.state_file = Path(state_file)
        self.devices = devices
        self.first_wave = first_wave
        self.keys = {d: (keys or {}).get(d, d) for d in devices}
        self.names = {key: device for device, key in self.keys.items()}
        self.capacity = {self.keys[d]: (capacity or {}).get(d) for d in devices}
        self.run = run
        self.held_dir = self.state_file.with_suffix(".held")
        self._lock = FileLock(str(self.state_file) + ".lock")

    def problem(self) -> str | None:
        """Why this pool's folder cannot hold leases (a file, not writable), in one line; None when it can."""
        folder = self.state_file.parent
        fix = "point TRAINSPEC_LEASE_DIR at a folder every run on this machine can write"
        if folder.exists() and not folder.is_dir():
            return f"the device lease folder {folder} is a file; {fix}"
        probe = folder / f".probe-{os.getpid()}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            return f"the device lease folder {folder} is not writable: {error.strerror or error}; {fix}"
        return None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self._lock.acquire(poll_interval=LOCK_POLL_SECONDS)
        except TimeoutError:
            # A caller's deadline (TimeoutError is an OSError) is not a broken lock folder: let it through.
            raise
        except OSError as error:
            raise LeaseError(self._cannot("lock", error)) from None
        try:
            yield
        finally:
            self._lock.release()

    def _cannot(self, what: str, error: OSError) -> str:
        return f"{self.state_file}: cannot {what} the device lease state ({error.strerror or error})"

    def _read(self) -> dict:
        """The pool's state with dead holders and waiters dropped; a state file that is not one
        (garbage, another shape) reads as a fresh queue, with one warning, and is replaced on the next write.
        The holders always come from their own files, whatever became of the state file."""
        state = self._read_queue()
        state["holders"] = read_holders(self.held_dir)
        return state

    def _read_queue(self) -> dict:
        state: dict | None = read_json(self.state_file, "device lease state")
        if state is None:
            return self._fresh()
        try:
            if not all(WAITER_KEYS <= w.keys() for w in state["queue"]):
                raise KeyError("a waiter without its fields")
            state["queue"] = [w for w in state["queue"] if is_alive(w["owner"])]
            if not (
                isinstance(state["tickets"], int)
                and isinstance(state["runs"], dict)
                and isinstance(state["capacity"], dict)
            ):
                raise TypeError("a counter of the wrong type")
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            warnings.warn(
                f"{self.state_file}: the device lease state is unreadable ({type(error).__name__}: {error}); "
                "started afresh",
                KeptFileWarning,
                stacklevel=2,
            )
            return self._fresh()
        return state

    @staticmethod
    def _fresh() -> dict:
        return {"holders": {}, "queue": [], "tickets": 0, "runs": {}, "capacity": {}}

    def _write(self, state: dict) -> None:
        """The holders' own files first (the truth), then the state file; LeaseError when either cannot be written."""
        try:
            write_holders(self.held_dir, state["holders"])
        except OSError as error:
            raise LeaseError(self._cannot("write", error)) from None
        try:
            atomic_write_text(self.state_file, json.dumps(state))
        except OSError as error:
            self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}.tmp").unlink(missing_ok=True)
            raise LeaseError(self._cannot("write", error)) from None

    def _update(self, change: Callable[[dict], object]) -> dict:
        with self._locked():
            state = self._read()
            change(state)
            self._write(state)
            return state

    def holders(self) -> dict[str, list[dict]]:
        """Who holds each of this run's devices now (live owners only), by this run's device name."""
        with self._locked():
            return self._by_device(self._read())

    def _by_device(self, state: dict) -> dict[str, list[dict]]:
        held: dict[str, list[dict]] = {}
        for holder in state["holders"].values():
            for key in holder["devices"]:
                if key in self.names:
                    held.setdefault(self.names[key], []).append(holder)
        return held

    def snapshot(self) -> dict:
        """Holders and waiters for display, without the lock: the file is replaced whole, and a
        progress line must not slow down the workers that lease."""
        return self._read()

    def others(self, state: dict | None = None) -> list[str]:
        """Other runs' specs holding this run's devices: `spec on devices (pid N)`."""
        state = self.snapshot() if state is None else state
        return [
            f"{h['name']} on {','.join(self.names[k] for k in h['devices'] if k in self.names)} (pid {h['owner'][0]})"
            for h in state["holders"].values()
            if h["run"] != self.run and any(k in self.names for k in h["devices"])
        ]

    @contextmanager
    def lease(
        self, count: int, name: str, priority: int = 0, expected: float = 0.0, memory: int | None = None
    ) -> Iterator[Lease]:
        lease = self.acquire(count, name, priority, expected, memory)
        try:
            yield lease
        finally:
            lease.release()

    def acquire(
        self,
        count: int,
        name: str,
        priority: int = 0,
        expected: float = 0.0,
        memory: int | None = None,
        *,
        avoid: tuple[str, ...] = (),
    ) -> Lease:
        """Block until `count` distinct devices are this caller's, whole or (`memory` MiB each) shared.

        Devices in `avoid` (a retry after the machine failed on them) are taken last: others when
        they are free, these rather than waiting."""
        if count > len(self.devices):
            raise ValueError(f"{name} needs {count} devices; the pool has {len(self.devices)}")
        allowed = [self.keys[d] for d in self.devices]
        if memory is not None and all(c is None for c in self.capacity.values()):
            memory = None  # no device's memory is known: nothing can be shared safely
        if memory is not None and not Devices.empty(self.capacity).fits_ever(count, memory, allowed):
            best = max((c for c in self.capacity.values() if c is not None), default=0)
            raise ValueError(
                f"{name} declares {memory} MiB per device; the devices have at most {best} MiB free after headroom"
            )
        owner = process_key(os.getpid())
        began = time.monotonic()
        waited_for: set[str] = set()

        # Unique whatever the state file went through: a ticket count restarted from 0 must not name a holder.
        token = f"{owner[0]}-{uuid.uuid4().hex[:8]}"

        def enqueue(state: dict) -> None:
            state["tickets"] += 1
            state["capacity"].update(self.capacity)
            now = time.time()
            # First-wave bookkeeping is per run, kept for the run's life: dropped after its grace, the
            # entry would open again at the next ask and hold that waiter back for a whole grace.
            # Past its grace only its opening time counts: the machine-wide state stays small.
            state["runs"] = {
                r: v if now - v["opened"] <= FIRST_WAVE_GRACE else {"opened": v["opened"], "arrived": []}
                for r, v in state["runs"].items()
                if now - v["opened"] <= RUN_MEMORY_SECONDS
            }
            state["runs"].setdefault(self.run, {"opened": now, "arrived": []})["arrived"].append(priority)
            state["queue"].append(
                {
                    "token": token,
                    "owner": owner,
                    "name": name,
                    "run": self.run,
                    "k": count,
                    "memory": memory,
                    "allowed": allowed,
                    "avoid": [self.keys[d] for d in avoid if d in self.keys],
                    "priority": priority,
                    "ticket": state["tickets"],
                    "expected": expected,
                }
            )

        self._update(enqueue)
        seen: tuple[int, ...] | None = None
        judged = -math.inf  # at once, whatever the stamp
        try:
            while True:
                if (stamp := self._stamp()) == seen and time.monotonic() - judged < REJUDGE_SECONDS:
                    time.sleep(POLL_SECONDS)
                    continue
                seen, judged = stamp, time.monotonic()
                with self._locked():
                    state = self._read()
                    lost = not any(w["token"] == token for w in state["queue"])
                    if lost:
                        enqueue(state)  # the state file was deleted or replaced: ask again
                    granted = grant(state, token, time.time(), self.capacity, self.first_wave)
                    if granted is not None or lost:
                        self._write(state)
                    if granted is not None:
                        return Lease(
                            self,
                            tuple(self.names[k] for k in granted),
                            token,
                            time.monotonic() - began,
                            memory,
                            sorted(waited_for),
                        )
                waited_for.update(self.others(state))
                time.sleep(POLL_SECONDS)
        except BaseException:
            # Interrupted while waiting (Ctrl-C, a timeout): leave no phantom waiter behind.
            self._update(lambda state: state.__setitem__("queue", [w for w in state["queue"] if w["token"] != token]))
            raise

    def _stamp(self) -> tuple[int, ...] | None:
        """What changes whenever a waiter or holder comes or goes: the state file is replaced on every
        write, and a holder's own file is made or removed. None when either cannot be seen."""
        try:
            state, held = self.state_file.stat(), self.held_dir.stat()
        except OSError:
            return None
        return state.st_ino, state.st_mtime_ns, state.st_size, held.st_mtime_ns


def run_pool(inventory: Inventory, run_dir: Path, headroom: float, run: str, workers: int | None = None) -> LeasePool:
    """The pool a run leases from: the machine's for real GPUs, shared with every other run on
    them; the run's own for fake devices and the CPU (nothing real to share, so concurrent
    test runs do not queue behind each other)."""
    shared = inventory.kind in GPU_KINDS
    state = lease_dir() / "devices.json" if shared else run_dir / "leases.json"
    # The first item of each worker (`workers`, else one per device) starts together: the first wave.
    return LeasePool(
        state,
        inventory.ids,
        first_wave=max(1, workers) if workers is not None else inventory.count,
        keys=device_keys(inventory) if shared else None,
        capacity=device_capacity(inventory, headroom),
        run=run,
    )
