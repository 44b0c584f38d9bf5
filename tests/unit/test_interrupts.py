"""SIGTERM and SIGHUP stop the harness as Ctrl-C does, and no signal can leave a started run untracked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import harness.process
import harness.process.interrupts
from harness.launch import Launch
from harness.process import run_process
from harness.process.interrupts import interrupt_on_termination

from ..conftest import fresh_python, gone

ONCE = r"""
import os, signal, sys
from harness.process.interrupts import interrupt_on_termination
interrupt_on_termination()
signum = getattr(signal, sys.argv[1])
try:
    os.kill(os.getpid(), signum)
    print("not interrupted")
except KeyboardInterrupt as stop:
    print("interrupted by", stop)
# A second one, while records are being written, must not cut that short.
os.kill(os.getpid(), signal.SIGTERM)
os.kill(os.getpid(), signal.SIGHUP)
print("still here")
"""


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_a_terminating_signal_is_a_keyboard_interrupt_once(name: str) -> None:
    done = fresh_python(ONCE, name)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"interrupted by {name}", "still here"]


def test_a_handler_someone_else_set_is_left_alone() -> None:
    code = (
        "import signal; from harness.process.interrupts import interrupt_on_termination; mine = lambda *a: None; "
        "signal.signal(signal.SIGTERM, mine); interrupt_on_termination(); print(signal.getsignal(signal.SIGTERM) "
        "is mine, signal.getsignal(signal.SIGHUP).__name__)"
    )
    done = fresh_python(code)
    assert done.stdout.split() == ["True", "_interrupt"], done.stderr


@pytest.fixture
def terminating_interrupts():
    saved = {s: signal.getsignal(s) for s in harness.process.interrupts.TERMINATING}
    for s in saved:
        signal.signal(s, signal.SIG_DFL)
    interrupt_on_termination()
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_a_signal_that_arrives_while_the_run_starts_still_ends_the_run(
    tmp_path: Path, monkeypatch, terminating_interrupts
) -> None:
    """SIGTERM lands between the fork and the moment the harness knows the child: it is held
    until the run is tracked, then interrupts, and the child is ended, not left running."""
    started: list[int] = []
    real_popen = subprocess.Popen

    def popen_then_signal(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        started.append(proc.pid)
        os.kill(os.getpid(), signal.SIGTERM)
        return proc

    monkeypatch.setattr(harness.process.subprocess, "Popen", popen_then_signal)
    run = Launch(
        [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path, dict(os.environ), tmp_path / "out", 60
    )
    with pytest.raises(KeyboardInterrupt):
        run_process(run)
    assert started and gone(started[0])


def test_the_child_starts_with_no_signal_held_back(tmp_path: Path) -> None:
    """The harness holds signals back while it starts a run; the run itself must not inherit that,
    or the SIGTERM that ends its group would wait for SIGKILL."""
    code = "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('SigBlk')))"
    run = Launch([sys.executable, "-c", code], tmp_path, dict(os.environ), tmp_path / "out", 30)
    outcome = run_process(run)
    assert outcome.exit_code == 0
    assert int(run.stdout_path.read_text(), 16) == 0
