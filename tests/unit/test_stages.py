"""The stage checks on real log files: the planned interrupt's watcher and the resume jump."""

from __future__ import annotations

import json
from pathlib import Path

from harness.checks.after_run import check_resume_jump
from harness.checks.fail_fast import StepWatcher
from harness.logs.formats import parse_log
from harness.spec.sections import LogSpec

from .test_fail_fast import Clock


def _log(path: Path, steps: list[tuple[int, float]]) -> Path:
    path.write_text("".join(json.dumps({"step": s, "loss": loss}) + "\n" for s, loss in steps))
    return path


def test_step_watcher_fires_at_the_first_entry_at_or_past_its_step(tmp_path: Path) -> None:
    spec = LogSpec(path="train.jsonl")
    watcher = StepWatcher(tmp_path, spec, 50, clock=Clock())  # a still clock: the log is looked for at every poll
    assert watcher.poll() is None  # no log yet
    _log(tmp_path / "train.jsonl", [(40, 1.2), (45, 1.1)])
    assert watcher.poll() is None
    with open(tmp_path / "train.jsonl", "a") as stream:
        stream.write(json.dumps({"step": 55, "loss": 1.0}) + "\n")
    assert watcher.poll() == "interrupted as planned: the log showed step 55 (interrupt_at_step 50)"
    assert watcher.reached == 55


def test_resume_jump_passes_near_the_last_loss_and_fails_a_restart(tmp_path: Path) -> None:
    spec = LogSpec(format="jsonl")
    before = parse_log(_log(tmp_path / "a.jsonl", [(1, 3.6), (50, 1.14)]), spec)
    resumed = parse_log(_log(tmp_path / "b.jsonl", [(41, 1.18), (60, 1.1)]), spec)
    restarted = parse_log(_log(tmp_path / "c.jsonl", [(1, 3.68), (60, 1.1)]), spec)
    assert check_resume_jump("resume", 0.2, before, resumed).passed
    failed = check_resume_jump("resume", 0.2, before, restarted)
    assert not failed.passed and failed.found == "3.68 at step 1 after 1.14 at step 50: a jump of 223%"
    empty = check_resume_jump("resume", 0.2, before, None)
    assert not empty.passed and empty.found == "stage resume logged no loss"
