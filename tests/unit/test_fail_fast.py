"""harness.checks.fail_fast: fail fast on live files, read incrementally, and on real runs stopped early."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from harness.checks import fail_fast as watch
from harness.checks.after_run import check_exit, failure_reason, run_checks
from harness.checks.fail_fast import Appended, GrowingLog, LossWatcher, PatternWatcher, WholeFile, fail_fast_watchers
from harness.launch import Launch
from harness.logs import formats as logs
from harness.process import run_process
from harness.spec.files import spec_from_mapping
from harness.spec.sections import LogSpec


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def append(path: Path, text: str | bytes) -> None:
    with open(path, "ab") as stream:
        stream.write(text.encode() if isinstance(text, str) else text)


def spec(**fields):
    return spec_from_mapping({"id": "w", "command": ["x"], **fields}, Path("w.yaml"))


# following a growing file ------------------------------------------------------------------


def test_appended_reads_only_what_was_added_and_at_most_its_limit(tmp_path):
    path = tmp_path / "f.log"
    stream = Appended(path, limit=4)
    assert stream.read() == ""  # not there yet
    append(path, "abcdefgh")
    assert [stream.read(), stream.read(), stream.read()] == ["abcd", "efgh", ""]
    append(path, "ij")
    assert stream.read() == "ij"


def test_appended_keeps_a_character_split_between_reads_whole(tmp_path):
    path = tmp_path / "f.log"
    append(path, "é".encode()[:1])
    stream = Appended(path)
    assert stream.read() == ""
    append(path, "é".encode()[1:] + b"!")
    assert stream.read() == "é!"


def test_appended_starts_over_when_the_file_is_rewritten_shorter(tmp_path):
    path = tmp_path / "f.log"
    path.write_text("a long first version\n")
    stream = Appended(path)
    stream.read()
    path.write_text("short\n")
    assert stream.read() == "short\n"


# stderr patterns ---------------------------------------------------------------------------


def test_a_forbidden_pattern_stops_a_run_that_outlives_the_grace(tmp_path):
    path, clock = tmp_path / "stderr.log", Clock()
    watcher = PatternWatcher(path, ["Error", "Traceback (most recent call last)"], grace=5, clock=clock)
    append(path, "loading\nTraceback (most recent call last):\n  File 'x'\nRuntimeError: boom\n")
    assert watcher.poll() is None  # seen, but a crashing process gets time to exit by itself
    clock.now += 4.9
    assert watcher.poll() is None
    clock.now += 0.1
    assert watcher.poll() == "'Traceback (most recent call last)' at stderr line 2: Traceback (most recent call last):"


def test_the_matched_line_is_quoted(tmp_path):
    path = tmp_path / "stderr.log"
    watcher = PatternWatcher(path, ["re:CUDA.*memory"], grace=0)
    append(path, "ok\nRuntimeError: CUDA out of memory\n")
    assert watcher.poll() == "'re:CUDA.*memory' at stderr line 2: RuntimeError: CUDA out of memory"


def test_a_pattern_split_between_polls_is_found(tmp_path):
    path = tmp_path / "stderr.log"
    watcher = PatternWatcher(path, ["Traceback (most recent call last)"], grace=0)
    append(path, "x\nTraceback (most rec")
    assert watcher.poll() is None
    append(path, "ent call last):\n")
    assert watcher.poll() == "'Traceback (most recent call last)' at stderr line 2: Traceback (most recent call last):"


# training logs -----------------------------------------------------------------------------


def jsonl(*records: str) -> str:
    return "".join(f"{r}\n" for r in records)


@pytest.mark.parametrize(
    ("loss", "found"),
    [
        ("NaN", "nan"),
        ('"nan"', "'nan'"),
        ('"NaN"', "'NaN'"),
        ("null", "None"),
        ("Infinity", "inf"),
        ('"inf"', "'inf'"),
        ('""', "''"),
    ],
)
def test_a_loss_that_is_not_a_finite_number_stops_the_run(tmp_path, loss, found):
    out = tmp_path / "out"
    out.mkdir()
    watcher = LossWatcher(out, LogSpec(), clock=Clock())
    append(
        out / "train_log.jsonl",
        jsonl('{"step": 1, "loss": 3.0}', '{"step": 2, "eval_loss": 2.0}', f'{{"step": 3, "loss": {loss}}}'),
    )
    assert watcher.poll() == f"loss {found} at step 3 in train_log.jsonl"


def test_records_without_the_loss_key_and_malformed_lines_do_not_stop_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    watcher = LossWatcher(out, LogSpec(), clock=Clock())
    append(
        out / "train_log.jsonl",
        jsonl('{"step": 1}', "{not json", '{"step": 2, "loss": nan}', "[1, 2]", '{"step": 3, "loss": 2.5}'),
    )
    assert watcher.poll() is None


def test_only_complete_lines_count(tmp_path):
    path = tmp_path / "log.jsonl"
    reader = GrowingLog(path, LogSpec(), "jsonl")
    append(path, '{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert [e.step for e in reader.new_entries()] == [1.0]
    append(path, 'ss": NaN}\n')
    (entry,) = reader.new_entries()
    assert entry.step == 2.0 and not entry.finite


def test_an_endless_line_is_dropped_not_buffered(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "LINE_LIMIT", 100)
    path = tmp_path / "log.jsonl"
    reader = GrowingLog(path, LogSpec(), "jsonl")
    append(path, "x" * 500)
    assert reader.new_entries() == [] and reader.reader.pending == ""
    append(path, 'yyy\n{"step": 7, "loss": 1.0}\n')
    assert [e.step for e in reader.new_entries()] == [7.0]


def test_a_csv_log_is_followed_as_it_grows(tmp_path):
    out = tmp_path / "out" / "lightning_logs" / "version_0"
    out.mkdir(parents=True)
    watcher = LossWatcher(tmp_path / "out", LogSpec(loss_key="train_loss"), clock=Clock())
    append(out / "metrics.csv", "epoch,step,train_loss,val_loss\r\n0,1,3.0,\r\n0,1,,2.9\r\n0,2,")
    assert watcher.poll() is None
    append(out / "metrics.csv", "nan,\r\n")
    assert watcher.poll() == "loss 'nan' at step 2 in metrics.csv"


def test_a_csv_rewritten_with_a_wider_header_is_read_again_from_its_start(tmp_path):
    # Lightning's CSVLogger rewrites the whole file when a new column appears.
    path = tmp_path / "metrics.csv"
    reader = GrowingLog(path, LogSpec(loss_key="train_loss"), "csv")
    path.write_text("step,train_loss\n1,3.0\n2,2.5\n")
    assert [e.step for e in reader.new_entries()] == [1.0, 2.0]
    path.write_text("step,train_loss,grad_norm\n1,3.0,\n2,2.5,\n3,inf,7.0\n")
    entries = reader.new_entries()
    assert [e.step for e in entries] == [1.0, 2.0, 3.0] and entries[-1].loss == float("inf")


def test_appended_starts_over_when_the_start_of_the_file_changed(tmp_path):
    path = tmp_path / "f.log"
    append(path, "ab\n")
    stream = Appended(path)
    assert stream.read() == "ab\n"
    path.write_text("abc\nde\n")  # rewritten longer
    assert stream.read() == "abc\nde\n" and stream.restarts == 1


def test_a_log_that_appears_late_is_found_at_once_and_a_better_one_later(tmp_path):
    out, clock = tmp_path / "out", Clock()
    out.mkdir()
    watcher = LossWatcher(out, LogSpec(), clock=clock)
    assert watcher.poll() is None
    append(out / "metrics.jsonl", jsonl('{"step": 5, "loss": 2.0}'))
    assert watcher.poll() is None and watcher.path == out / "metrics.jsonl"
    (out / "runs").mkdir()
    (out / "runs" / "trainer_logs.json").write_text('[{"global_step": 6, "loss": NaN}]')  # first in the search order
    assert watcher.poll() is None  # searched again only now and then
    clock.now += watch.DISCOVER_SECONDS
    assert watcher.poll() == "loss nan at step 6 in trainer_logs.json"


def test_a_log_found_empty_is_read_as_soon_as_it_has_records(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train_log.jsonl").touch()  # opened by the trainer before its first step
    watcher = LossWatcher(out, LogSpec(), clock=Clock())
    assert watcher.poll() is None
    append(out / "train_log.jsonl", jsonl('{"step": 1, "loss": NaN}'))
    assert watcher.poll() == "loss nan at step 1 in train_log.jsonl"  # no second search needed


def test_a_forgather_log_rewritten_whole_and_cut_mid_write(tmp_path):
    run = tmp_path / "out" / "runs" / "run_0"
    run.mkdir(parents=True)
    path = run / "trainer_logs.json"
    clock = Clock()
    watcher = LossWatcher(tmp_path / "out", LogSpec(), clock=clock)
    records = [{"global_step": 10, "loss": 3.0}, {"global_step": 20, "loss": 2.0}]
    path.write_text(json.dumps(records))
    assert watcher.poll() is None
    records.append({"global_step": 30, "loss": float("nan")})
    text = json.dumps(records)
    path.write_text(text[: text.rindex("NaN") + 4])  # caught mid-write: the record is complete, the array is not
    clock.now += 10
    assert watcher.poll() == "loss nan at step 30 in trainer_logs.json"


def test_a_hugging_face_state_mid_write_is_read_again_once_it_changes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    path = out / "trainer_state.json"
    clock = Clock()
    watcher = LossWatcher(out, LogSpec(format="hf"), clock=clock)
    state = {"log_history": [{"step": 10, "loss": 2.0}, {"step": 20, "loss": float("inf")}]}
    path.write_text(json.dumps(state)[:-5])
    assert watcher.poll() is None
    path.write_text(json.dumps(state))
    clock.now += 10
    assert watcher.poll() == "loss inf at step 20 in trainer_state.json"


def test_a_malformed_whole_file_log_is_not_parsed_again_until_it_changes(tmp_path, monkeypatch):
    parses = []
    real = watch.parse_text
    monkeypatch.setattr(watch, "parse_text", lambda *args: parses.append(1) or real(*args))
    path = tmp_path / "trainer_state.json"
    path.write_text('{"log_history": [')
    reader = WholeFile(path, LogSpec(), clock=Clock())
    for _ in range(5):
        assert reader.new_entries() == []
    assert len(parses) == 1


def test_a_whole_file_log_is_parsed_only_when_it_changed_and_not_too_often(tmp_path, monkeypatch):
    clock, parses = Clock(), []
    real = watch.parse_text

    def slow_parse(*args):
        parses.append(clock.now)
        clock.now += 0.5  # a parse that takes half a second
        return real(*args)

    monkeypatch.setattr(watch, "parse_text", slow_parse)
    path = tmp_path / "trainer_logs.json"
    reader = WholeFile(path, LogSpec(), clock=clock)
    path.write_text(json.dumps([{"global_step": 1, "loss": 2.0}]))
    assert len(reader.new_entries()) == 1
    for _ in range(5):
        assert reader.new_entries() == []
    assert len(parses) == 1  # unchanged: not read again
    path.write_text(json.dumps([{"global_step": 1, "loss": 2.0}, {"global_step": 2, "loss": 1.0}]))
    clock.now += watch.PARSE_SHARE * 0.5 - 0.1
    assert reader.new_entries() == [] and len(parses) == 1  # changed, but parsing would take over
    clock.now += 0.1
    assert [e.step for e in reader.new_entries()] == [2.0]  # only what is new


# which watchers a spec gets ----------------------------------------------------------------


def test_watchers_follow_the_checks_a_spec_has(tmp_path):
    kinds = lambda s: [type(w).__name__ for w in fail_fast_watchers(s, tmp_path, tmp_path / "stderr.log")]  # noqa: E731
    assert kinds(spec()) == ["PatternWatcher"]  # no loss block: a NaN would not fail it
    assert kinds(spec(loss={})) == ["PatternWatcher", "LossWatcher"]
    assert kinds(spec(loss={"no_nan": False}, stderr={"forbidden_patterns": []})) == []
    assert kinds(spec(loss={}, fail_fast=False)) == []


# real runs ---------------------------------------------------------------------------------

WRITES_NAN_THEN_HANGS = r"""
import json, sys, time
with open(sys.argv[1], "w") as log:
    for step in range(1, 6):
        log.write(json.dumps({"step": step, "loss": 4.0 / step if step < 4 else float("nan")}) + "\n")
        log.flush()
time.sleep(60)
"""


def launch(tmp_path: Path, code: str, *args: str) -> Launch:
    return Launch([sys.executable, "-c", code, *args], tmp_path, dict(os.environ), tmp_path / "out", 60)


def test_a_run_that_logs_nan_is_stopped_at_once(tmp_path):
    run = launch(tmp_path, WRITES_NAN_THEN_HANGS, str(tmp_path / "out" / "train_log.jsonl"))
    (tmp_path / "out").mkdir()
    outcome = run_process(run, fail_fast_watchers(spec(loss={}), run.output_dir, run.stderr_path))
    assert outcome.stopped_by == "loss nan at step 4 in train_log.jsonl"
    assert outcome.duration < run.timeout
    result = check_exit(outcome)
    assert result.line() == (
        "[FAIL] fail_fast: expected no forbidden stderr pattern and no NaN, inf or missing loss while it "
        "runs; found loss nan at step 4 in train_log.jsonl; the run was stopped there"
    )


def test_a_crash_that_exits_by_itself_keeps_its_exit_code(tmp_path):
    run = launch(tmp_path, "raise SystemExit('Traceback (most recent call last): boom')")
    outcome = run_process(run, fail_fast_watchers(spec(), run.output_dir, run.stderr_path))
    assert outcome.stopped_by is None and outcome.exit_code == 1
    assert check_exit(outcome).line() == "[FAIL] exit_code: expected exit code 0; found exit code 1"


def test_a_run_that_hangs_after_a_forbidden_line_is_stopped_after_the_grace(tmp_path):
    code = (
        "import sys, time; print('rank 1: Traceback (most recent call last)', file=sys.stderr, flush=True); "
        "time.sleep(60)"
    )
    run = launch(tmp_path, code)
    outcome = run_process(run, [PatternWatcher(run.stderr_path, ["Traceback (most recent call last)"], grace=0.5)])
    assert (
        outcome.stopped_by
        == "'Traceback (most recent call last)' at stderr line 1: rank 1: Traceback (most recent call last)"
    )
    assert outcome.duration < 20


def test_a_run_stopped_at_a_nan_fails_once_with_what_it_could_not_reach_noted_under_it(tmp_path):
    run = launch(tmp_path, WRITES_NAN_THEN_HANGS, str(tmp_path / "out" / "train_log.jsonl"))
    (tmp_path / "out").mkdir()
    the_spec = spec(
        loss={"final_max": 1.0, "must_decrease": True},
        min_steps_logged=100,
        expected_files=["model.bin"],
        metrics={"grad_norm": {"max": 5}},
    )
    outcome = run_process(run, fail_fast_watchers(the_spec, run.output_dir, run.stderr_path))
    results, _ = run_checks(the_spec, outcome, run.output_dir, run.stderr_path)
    failed = [r for r in results if not r.passed and r.severity == "fail"]
    assert [r.name for r in failed] == ["fail_fast"]
    assert failure_reason(failed) == "fail_fast: loss nan at step 4 in train_log.jsonl; the run was stopped there"
    consequences = [
        "expected_files",
        "min_steps_logged",
        "loss.no_nan",
        "loss.final_max",
        "loss.must_decrease",
        "metrics.grad_norm",
    ]
    assert [r.name for r in results if r.severity == "info"] == consequences
    assert [note.split(":")[0] for note in failed[0].notes] == consequences
    assert "then: min_steps_logged: 5 in train_log.jsonl" in failed[0].line()
    assert all(not r.passed for r in results if r.severity == "info")
