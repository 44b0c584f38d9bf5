"""harness.process: real commands in their own process group, killed whole on timeout or when asked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.checks.after_run import check_exit
from harness.launch import Launch
from harness.process import end_group, run_process

from ..conftest import gone


def launch(
    tmp_path: Path, code: str, *args: str, timeout: float = 20.0, cwd: Path | None = None, env: dict | None = None
) -> Launch:
    return Launch(
        [sys.executable, "-c", code, *args],
        cwd or tmp_path,
        {**os.environ, **(env or {})},
        tmp_path / "out" / "spec",
        timeout,
    )


SPAWN_AND_SLEEP = r"""
import subprocess, sys, time
grandchild = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=(sys.argv[2] == "leave-group")
)
open(sys.argv[1], "w").write(str(grandchild.pid))
time.sleep(120)
"""

SPAWN_AND_EXIT = r"""
import subprocess, sys
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
open(sys.argv[1], "w").write(str(grandchild.pid))
print("leaving my child behind", flush=True)
"""


def test_exit_code_duration_and_output_files(tmp_path):
    code = "import sys, time; time.sleep(0.2); print('to stdout'); print('to stderr', file=sys.stderr); sys.exit(3)"
    run = launch(tmp_path, code)
    outcome = run_process(run)
    assert outcome.exit_code == 3
    assert (
        outcome.signal is None and not outcome.timed_out and outcome.stopped_by is None and outcome.start_error is None
    )
    assert outcome.duration >= 0.2
    assert outcome.leftovers == []
    assert outcome.describe() == "exit code 3"
    assert run.stdout_path == tmp_path / "out" / "spec" / "stdout.log"
    assert run.stdout_path.read_text() == "to stdout\n"
    assert run.stderr_path.read_text() == "to stderr\n"


def test_the_command_runs_in_its_cwd_with_its_env_and_no_stdin(tmp_path):
    where = tmp_path / "project"
    where.mkdir()
    code = "import os, sys; print(os.getcwd()); print(os.environ['TRAINSPEC_PROBE']); print(repr(sys.stdin.read()))"
    run = launch(tmp_path, code, cwd=where, env={"TRAINSPEC_PROBE": "seen"})
    assert run_process(run).exit_code == 0
    assert run.stdout_path.read_text().splitlines() == [str(where), "seen", "''"]


def test_on_start_gets_the_pid_of_the_group_leader(tmp_path):
    seen = []
    run = launch(tmp_path, "import os; print(os.getpid(), os.getpgid(0), os.getsid(0))")
    run_process(run, on_start=seen.append)
    pid, pgid, sid = map(int, run.stdout_path.read_text().split())
    assert seen == [pid]
    assert pgid == pid and sid == pid  # its own session and process group
    assert pgid != os.getpgid(0)


def test_timeout_kills_the_whole_group_grandchild_included(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    started = []
    outcome = run_process(
        launch(tmp_path, SPAWN_AND_SLEEP, str(pid_file), "same-group", timeout=1.0), on_start=started.append
    )
    assert outcome.timed_out
    assert outcome.describe().startswith("timed out after")
    # Ended at its 1 s timeout, not when the 120 s sleepers would have.
    assert 1.0 <= outcome.duration < 120
    assert not check_exit(outcome).passed
    grandchild = int(pid_file.read_text())
    assert gone(grandchild)
    assert gone(started[0])
    assert outcome.leftovers == []  # a timeout is reported as such, not as leftovers


def test_timeout_also_ends_a_descendant_that_left_the_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    outcome = run_process(launch(tmp_path, SPAWN_AND_SLEEP, str(pid_file), "leave-group", timeout=1.0))
    assert outcome.timed_out
    grandchild = int(pid_file.read_text())
    assert gone(grandchild)


@pytest.mark.parametrize("ended_by", ["timeout", "watcher"])
def test_a_run_the_harness_ends_reports_the_signal_not_exit_code_0(tmp_path, ended_by):
    class StopNow:
        def poll(self):
            return "asked to stop"

    run = launch(tmp_path, "import time; time.sleep(120)", timeout=0.5 if ended_by == "timeout" else 20)
    outcome = run_process(run, [StopNow()] if ended_by == "watcher" else [])
    assert outcome.timed_out == (ended_by == "timeout")
    assert outcome.exit_code is None
    assert outcome.signal == signal.SIGTERM


def test_a_background_grandchild_left_behind_is_killed_and_listed(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    run = launch(tmp_path, SPAWN_AND_EXIT, str(pid_file))
    outcome = run_process(run)
    grandchild = int(pid_file.read_text())
    assert outcome.exit_code == 0
    assert not outcome.timed_out
    assert len(outcome.leftovers) == 1
    assert outcome.leftovers[0].startswith(f"{grandchild} ")
    assert gone(grandchild)
    assert run.stdout_path.read_text() == "leaving my child behind\n"


LEAVE_GROUP_AND_EXIT = r"""
import subprocess, sys
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
open(sys.argv[1], "w").write(str(grandchild.pid))
"""


def test_a_grandchild_that_left_the_group_as_its_parent_exits_is_still_ended(tmp_path):
    """Orphaned before any census could see it (as torchrun's ranks, each in its own session,
    when torchrun dies): adopted by the runner, so still found, ended and listed."""
    pid_file = tmp_path / "grandchild.pid"
    outcome = run_process(launch(tmp_path, LEAVE_GROUP_AND_EXIT, str(pid_file)))
    grandchild = int(pid_file.read_text())
    assert outcome.exit_code == 0
    assert [name.split()[0] for name in outcome.leftovers] == [str(grandchild)]
    assert gone(grandchild)


def test_a_command_that_does_not_exist_does_not_start(tmp_path):
    run = Launch(["trainspec-no-such-command-xyz", "--help"], tmp_path, dict(os.environ), tmp_path / "out", 5)
    outcome = run_process(run)
    assert outcome.exit_code is None and outcome.signal is None
    assert outcome.start_error is not None and outcome.start_error.startswith("trainspec-no-such-command-xyz: ")
    assert outcome.describe().startswith("did not start: ")
    assert not check_exit(outcome).passed


def test_a_missing_cwd_is_named_in_the_start_error(tmp_path):
    missing = tmp_path / "no-such-project"
    outcome = run_process(Launch([sys.executable, "-c", "pass"], missing, dict(os.environ), tmp_path / "out", 5))
    assert outcome.start_error is not None
    assert str(missing) in outcome.start_error


class StopAtStep:
    """A watcher that follows the run's stdout file, as a live log check would."""

    def __init__(self, path: Path, step: int):
        self.path, self.step, self.polls = path, step, 0

    def poll(self) -> str | None:
        self.polls += 1
        text = self.path.read_text() if self.path.exists() else ""
        return f"saw step {self.step}" if f"step {self.step}\n" in text else None


def test_a_watcher_that_gives_a_reason_stops_the_run(tmp_path):
    code = "import time\nfor i in range(1000):\n    print(f'step {i}', flush=True)\n    time.sleep(0.02)"
    run = launch(tmp_path, code)
    watcher = StopAtStep(run.stdout_path, 5)
    started = []
    outcome = run_process(run, [watcher], on_start=started.append)
    assert outcome.stopped_by == "saw step 5"
    assert not outcome.timed_out
    assert outcome.describe() == "stopped early: saw step 5"
    assert watcher.polls >= 1
    assert gone(started[0])
    assert "step 999" not in run.stdout_path.read_text()


def test_watchers_that_say_nothing_let_the_run_finish(tmp_path):
    run = launch(tmp_path, "print('done')")
    outcome = run_process(run, [StopAtStep(run.stdout_path, 10**6)])
    assert outcome.exit_code == 0 and outcome.stopped_by is None


def test_end_group_escalates_to_sigkill_after_the_grace(tmp_path):
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
        "time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline() == "ready\n"
    began = time.monotonic()
    names = end_group(proc.pid, grace=0.2)
    assert time.monotonic() - began < 120  # killed after its 0.2 s grace, not left to sleep
    assert names and names[0].startswith(f"{proc.pid} ")
    proc.wait(timeout=5)
    assert gone(proc.pid)


def test_end_group_of_an_empty_group_finds_nothing(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait()
    assert end_group(proc.pid, grace=0.1) == []


def test_a_tracked_group_that_ignores_sigterm_is_ended_from_its_note(tmp_path):
    """What the controller does at the end of a run for a worker that could not end its run's group."""
    import harness.process
    from harness.process import end_tracked_groups, track, track_groups

    ignores = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", ignores], start_new_session=True, stdout=subprocess.PIPE)
    proc.stdout.readline()
    track_groups(tmp_path / "groups")
    try:
        track(proc.pid)
        assert (tmp_path / "groups" / str(proc.pid)).exists()
        assert [name.split()[0] for name in end_tracked_groups(tmp_path / "groups")] == [str(proc.pid)]
        proc.wait(timeout=30)  # reaped by the clean-up already: its code is lost, its end is not
        assert gone(proc.pid)
        assert not (tmp_path / "groups").exists()
    finally:
        harness.process._tracked_in.clear()  # this test's process notes nothing from now on
        if proc.poll() is None:
            proc.kill()
