"""The progress view: status from the lease pool, one line per finished spec."""

from __future__ import annotations

import threading
import time

from harness.devices.leases import LeasePool
from harness.records import SpecResult
from harness.report.progress import Progress


class Reporter:
    """Records what would reach the terminal."""

    def __init__(self):
        self.lines: list[str] = []
        self.rewrites: list[str] = []

    def write_line(self, line: str, **markup) -> None:
        self.lines.append(line)

    def rewrite(self, line: str, **markup) -> None:
        self.rewrites.append(line)

    def write(self, text: str, **markup) -> None:
        pass


def test_status_names_each_running_spec_its_devices_and_elapsed_over_expected(tmp_path):
    pool = LeasePool(tmp_path / "leases.json", ("0", "1", "2"))
    wide = pool.acquire(2, "wide", expected=120.0)
    narrow = pool.acquire(1, "narrow", expected=0.0)
    progress = Progress(
        Reporter(), pool, live=False, expected=lambda name: {"narrow": 30.0, "cpu_only": 5.0}.get(name, 0.0)
    )
    progress.total = 4
    progress.spec_started("cpu_only")  # gpus: 0, so no lease: known from the controller alone
    status = progress.status(now_wall=time.time() + 10)
    assert status.startswith("running: wide [0,1] 10s/120s, narrow [2] 10s/30s, cpu_only [-] 0s/5s")
    assert status.endswith("| done 0/4")
    wide.release()
    narrow.release()
    progress.stop()


def test_waiting_specs_are_counted_not_listed_as_running(tmp_path):
    pool = LeasePool(tmp_path / "leases.json", ("0",))
    held = pool.acquire(1, "first")
    progress = Progress(Reporter(), pool, live=False, expected=lambda name: 0.0)
    waiter = threading.Thread(target=lambda: pool.acquire(1, "second").release())
    progress.spec_started("second")
    waiter.start()
    deadline = time.monotonic() + 5
    while "waiting" not in progress.status() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "waiting: 1" in progress.status() and "second" not in progress.status()
    held.release()
    waiter.join(5)
    progress.stop()


def test_a_finished_spec_gets_one_line_with_its_outcome_and_count(tmp_path):
    reporter = Reporter()
    progress = Progress(reporter, LeasePool(tmp_path / "leases.json", ("0",)), live=True, expected=lambda name: 0.0)
    progress.total = 2
    progress.spec_started("a")
    progress.spec_finished(
        SpecResult(
            id="a",
            outcome="failed",
            reason="loss.final_max: 3.2\nmore",
            duration=12.34,
            devices=["0"],
            failure_kind="numeric",
        )
    )
    progress.stop()
    assert reporter.lines == ["FAIL  a  12.3s on 0  [1/2]  [numeric] loss.final_max: 3.2"]
    assert reporter.rewrites[-1] == ""  # the live line is erased when the run ends


def test_every_write_gets_past_output_capture(tmp_path):
    """Without xdist a spec runs inside pytest's capture: each write is wrapped in the hook that lifts it."""
    import contextlib

    entered = []

    @contextlib.contextmanager
    def uncaptured():
        entered.append(True)
        yield

    reporter = Reporter()
    progress = Progress(
        reporter,
        LeasePool(tmp_path / "leases.json", ("0",)),
        live=False,
        expected=lambda name: 0.0,
        uncaptured=uncaptured,
    )
    progress.spec_finished(SpecResult(id="a", outcome="passed", duration=1.0))
    progress.stop()
    assert reporter.lines == ["PASS  a  1.0s on -  [1/?]"] and len(entered) == 2
