"""harness.rundir: one live run per run directory; a folder that cannot hold a run is said in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.devices.leases import process_key
from harness.rundir import OWNER_FILE, RunDirError, claim, release


def dead_process_key() -> list:
    """The key of a real process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    key = process_key(proc.pid)
    proc.wait()
    return key


@pytest.fixture
def live_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def owner(run_dir: Path) -> dict:
    return json.loads((run_dir / OWNER_FILE).read_text())


def test_a_fresh_folder_is_created_and_claimed_then_released(tmp_path: Path) -> None:
    run_dir = tmp_path / "a" / "b"
    claim(run_dir)
    assert owner(run_dir)["process"] == process_key(os.getpid())
    claim(run_dir)  # the same process again (pytest in-process twice): still its own
    release(run_dir)
    assert not (run_dir / OWNER_FILE).exists()


def test_a_folder_a_live_run_holds_is_refused_naming_its_pid(tmp_path: Path, live_process) -> None:
    (tmp_path / OWNER_FILE).write_text(
        json.dumps({"process": process_key(live_process.pid), "since": "2025-01-01T00:00:00"})
    )
    with pytest.raises(
        RunDirError,
        match=rf"is in use by a live run \(pid {live_process.pid}, since 2025-01-01T00:00:00\); wait for it to "
        r"end, or give another --run-dir",
    ):
        claim(tmp_path)
    release(tmp_path)  # not ours: left alone
    assert owner(tmp_path)["process"][0] == live_process.pid


@pytest.mark.parametrize(
    "left_behind",
    [
        pytest.param(lambda: json.dumps({"process": dead_process_key()}), id="a dead owner"),
        pytest.param(lambda: json.dumps({"process": [os.getppid(), 1.0]}), id="a reused pid"),
        pytest.param(lambda: "\x00garbage", id="garbage"),
        pytest.param(lambda: json.dumps({"process": "x"}), id="another shape"),
        pytest.param(lambda: "[1, 2]", id="not an object"),
    ],
)
def test_a_claim_nobody_live_holds_is_taken_over(tmp_path: Path, left_behind) -> None:
    (tmp_path / OWNER_FILE).write_text(left_behind())
    claim(tmp_path)
    assert owner(tmp_path)["process"] == process_key(os.getpid())


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda tmp: (tmp / "file").write_text("x") and tmp / "file", "is a file"),
        (lambda tmp: (tmp / "file").write_text("x") and tmp / "file" / "run", "cannot be created: Not a directory"),
        (lambda tmp: Path("/proc/trainspec-run"), "cannot be created: "),
        (lambda tmp: Path("/sys/kernel"), "is not writable: "),
    ],
    ids=["a file", "below a file", "in a filesystem that refuses it", "a folder nobody may write"],
)
def test_a_folder_that_cannot_hold_a_run_is_one_line(tmp_path: Path, make, said: str) -> None:
    run_dir = make(tmp_path)
    with pytest.raises(RunDirError) as raised:
        claim(run_dir)
    assert said in str(raised.value) and str(run_dir) in str(raised.value) and "\n" not in str(raised.value)
