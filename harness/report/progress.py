"""What a person watching a run sees while it runs.

pytest prints a letter per test and the file it came from; for runs of minutes that says
nothing. Under `python -m harness run` (verbosity 0) those letters are replaced by one line
per finished spec, and a status line shows which specs run on which devices, with elapsed
and expected seconds: redrawn in place every second on a terminal, printed every
`LOG_INTERVAL` seconds to a log. The status comes from the lease pool's state file, which
every worker updates, so it needs nothing from the workers.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from harness.devices.leases import LeasePool
from harness.records import SpecResult
from harness.report.summary import MARKS

LIVE_INTERVAL = 1.0
LOG_INTERVAL = 30.0


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if value < 600 else f"{value / 60:.0f}m"


class Progress:
    """Finished-spec lines and a periodic status line, written through pytest's terminal writer."""

    def __init__(
        self,
        reporter: Any,
        pool: LeasePool,
        live: bool,
        expected: Callable[[str], float],
        uncaptured: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    ):
        self.reporter = reporter
        # Without xdist a spec runs inside pytest's output capture; our lines must get past it.
        self.uncaptured = uncaptured
        self.pool = pool
        self.live = live
        self.expected = expected
        self.total = 0
        self.done = 0
        self.started: dict[str, float] = {}
        self._lock = threading.Lock()
        self._drawn = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="trainspec-progress", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock, self.uncaptured():
            self._erase()

    def spec_started(self, spec_id: str) -> None:
        self.started.setdefault(spec_id, time.monotonic())
        self.start()

    def spec_finished(self, record: SpecResult) -> None:
        self.started.pop(record.id, None)
        self.done += 1
        devices = ",".join(record.devices) or "-"
        line = (
            f"{MARKS.get(record.outcome, record.outcome):5} {record.id}  {record.duration:.1f}s on {devices}  "
            f"[{self.done}/{self.total or '?'}]"
        )
        if record.outcome != "passed" and record.reason:
            kind = f"[{record.failure_kind}] " if record.failure_kind else ""
            line += f"  {kind}{record.reason.splitlines()[0][:100]}"
        with self._lock, self.uncaptured():
            self._erase()
            self.reporter.write_line(line, **({"red": True} if record.outcome in ("failed", "error") else {}))
            self._draw()

    def status(self, now_wall: float | None = None) -> str:
        """`running: id [devices] elapsed/expected, ... | waiting: n | done d/t`."""
        now_wall = time.time() if now_wall is None else now_wall
        state = self.pool.snapshot()
        mine = sorted((h for h in state["holders"].values() if h["run"] == self.pool.run), key=lambda h: h["start"])
        waiting = [w for w in state["queue"] if w["run"] == self.pool.run]
        busy = {h["name"] for h in mine} | {w["name"] for w in waiting}
        running = [
            f"{h['name']} [{','.join(self.pool.names.get(k, k) for k in h['devices'])}] "
            f"{_seconds(now_wall - h['start'])}/{_seconds(h['expected'] or self.expected(h['name']))}"
            for h in mine
        ]
        # Specs without devices (gpus: 0) run without a lease; the controller saw them start.
        now = time.monotonic()
        running += [
            f"{name} [-] {_seconds(now - began)}/{_seconds(self.expected(name))}"
            for name, began in self.started.items()
            if name not in busy
        ]
        parts = [f"running: {', '.join(running) or '-'}"]
        if waiting:
            others = self.pool.others(state)
            parts.append(
                f"waiting: {len(waiting)}"
                + (f" (for devices another run holds: {', '.join(others)})" if others else "")
            )
        parts.append(f"done {self.done}/{self.total or '?'}")
        return " | ".join(parts)

    def _loop(self) -> None:
        interval = LIVE_INTERVAL if self.live else LOG_INTERVAL
        while not self._stop.wait(interval):
            with self._lock, self.uncaptured():
                if self.live:
                    self._draw()
                elif self.started:
                    self.reporter.write_line(f"trainspec: {self.status()}")

    def _draw(self) -> None:
        if not self.live or self._stop.is_set():
            return
        line = self.status()
        width = max(20, shutil.get_terminal_size().columns - 1)
        self.reporter.rewrite(line[:width], erase=True)
        self._drawn = True

    def _erase(self) -> None:
        if self._drawn:
            self.reporter.rewrite("", erase=True)
            self.reporter.write("\r")
            self._drawn = False
