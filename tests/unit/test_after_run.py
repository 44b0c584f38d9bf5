"""harness.checks.after_run: every check passing and failing, and the root error of a failed run."""

from __future__ import annotations

import json
from pathlib import Path

from harness.checks.after_run import (
    CheckResult,
    check_exit,
    check_files,
    check_leftovers,
    check_log,
    check_loss,
    check_metric,
    check_stderr,
    failure_reason,
    read_log,
    run_checks,
    under_the_stop,
)
from harness.checks.stderr import root_error
from harness.logs.formats import parse_log
from harness.process import ProcessOutcome
from harness.spec.files import spec_from_mapping
from harness.spec.sections import LogSpec, MetricBound


def spec(**fields):
    return spec_from_mapping({"id": "c", "command": ["x"], **fields}, Path("c.yaml"))


def ok_outcome(**changes) -> ProcessOutcome:
    return ProcessOutcome(**{"exit_code": 0, "duration": 1.0, **changes})


def write_log(output_dir: Path, losses: list, name: str = "metrics.jsonl", **extra_keys) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / name
    lines = []
    for i, loss in enumerate(losses, 1):
        record = {"step": i, "loss": loss}
        for key, values in extra_keys.items():
            record[key] = values[i - 1]
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


def log_of(tmp_path: Path, losses: list, keys: tuple[str, ...] = (), **extra_keys):
    return parse_log(write_log(tmp_path / "out", losses, **extra_keys), LogSpec(), (*keys, *extra_keys))


def output_with(tmp_path: Path, name: str, text: str) -> Path:
    """The output folder of a run that wrote `text` to `name`, as it wrote it (cut short, malformed)."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / name).write_text(text)
    return out


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


# exit code -------------------------------------------------------------------------------


def test_exit_code():
    assert check_exit(ok_outcome()).passed
    failed = check_exit(ok_outcome(exit_code=2))
    assert not failed.passed
    assert failed.line() == "[FAIL] exit_code: expected exit code 0; found exit code 2"
    timed_out = check_exit(ok_outcome(exit_code=None, signal=15, timed_out=True, duration=3.04))
    assert not timed_out.passed
    assert timed_out.found == "timed out after 3.0 s; its process group was killed"
    killed = check_exit(ok_outcome(exit_code=None, signal=9))
    assert not killed.passed and killed.found == "killed by signal SIGKILL"
    never = check_exit(ok_outcome(exit_code=None, start_error="x: No such file or directory"))
    assert not never.passed and "did not start" in never.found


def test_a_run_fail_fast_stopped_is_judged_by_what_stopped_it():
    stopped = check_exit(ok_outcome(exit_code=None, signal=15, stopped_by="loss nan at step 10 in train_log.jsonl"))
    assert stopped.name == "fail_fast" and not stopped.passed
    assert stopped.found == "loss nan at step 10 in train_log.jsonl; the run was stopped there"


def test_leftover_processes_fail_the_run():
    assert check_leftovers(ok_outcome()) == []
    [result] = check_leftovers(ok_outcome(leftovers=["101 python", "102 sleep"]))
    assert not result.passed
    assert result.found == "2 left running and killed: 101 python, 102 sleep"


# stderr ----------------------------------------------------------------------------------


def test_forbidden_pattern_found_with_its_line(tmp_path):
    stderr = tmp_path / "stderr.log"
    stderr.write_text("loading\nwarming up\nRuntimeError: CUDA out of memory\nmore\n")
    results = check_stderr(spec(stderr={"forbidden_patterns": ["RuntimeError", "Segmentation fault"]}), stderr)
    assert [(r.name, r.passed) for r in results] == [
        ("stderr.forbidden_patterns", False),
        ("stderr.forbidden_patterns", True),
    ]
    assert results[0].found == "line 3: RuntimeError: CUDA out of memory"
    assert results[0].expected == "no 'RuntimeError' in stderr"
    assert results[1].found == "none"


def test_default_forbidden_pattern_is_a_traceback(tmp_path):
    stderr = tmp_path / "stderr.log"
    stderr.write_text("Traceback (most recent call last):\n  File 'x'\nValueError\n")
    [result] = check_stderr(spec(), stderr)
    assert not result.passed and result.found.startswith("line 1: Traceback")


def test_warn_pattern_is_a_warning_not_a_failure(tmp_path):
    stderr = tmp_path / "stderr.log"
    stderr.write_text("ok\nUserWarning: something deprecated\n")
    results = check_stderr(spec(stderr={"forbidden_patterns": [], "warn_patterns": ["deprecated", "absent"]}), stderr)
    assert len(results) == 1  # only warn patterns that matched are reported
    assert results[0].severity == "warn" and not results[0].passed
    assert results[0].found == "line 2: UserWarning: something deprecated"
    assert results[0].line().startswith("[WARN] stderr.warn_patterns")


def test_regex_pattern(tmp_path):
    stderr = tmp_path / "stderr.log"
    stderr.write_text("step 1\nloss is nan at step 7\n")
    [hit, miss] = check_stderr(spec(stderr={"forbidden_patterns": [r"re:loss is (nan|inf)", r"re:^Error \d+"]}), stderr)
    assert not hit.passed and hit.found == "line 2: loss is nan at step 7"
    assert miss.passed


def test_a_missing_stderr_file_has_no_hits(tmp_path):
    [result] = check_stderr(spec(), tmp_path / "never-written.log")
    assert result.passed


def test_a_long_matching_line_is_shortened_in_the_report(tmp_path):
    stderr = tmp_path / "stderr.log"
    stderr.write_text("RuntimeError " + "x" * 5000 + "\n")
    [result] = check_stderr(spec(stderr={"forbidden_patterns": ["RuntimeError"]}), stderr)
    assert len(result.found) < 400


# expected files --------------------------------------------------------------------------


def test_expected_files_by_basename_at_any_depth_and_by_glob(tmp_path):
    out = tmp_path / "out"
    (out / "runs" / "r1").mkdir(parents=True)
    (out / "runs" / "r1" / "trainer_logs.json").write_text("[]")
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "model.safetensors").write_text("")
    results = check_files(
        spec(expected_files=["trainer_logs.json", "checkpoint/*.safetensors", "checkpoint/*.bin", "config.json"]), out
    )
    assert [(r.passed, r.found) for r in results] == [
        (True, "runs/r1/trainer_logs.json"),
        (True, "checkpoint/model.safetensors"),
        (False, "no file matches 'checkpoint/*.bin'"),
        (False, "no file matches 'config.json'"),
    ]
    assert results[2].expected == "a file matching 'checkpoint/*.bin' in the output dir"
    assert check_files(spec(), out) == []


# the training log ------------------------------------------------------------------------


def test_min_steps_logged(tmp_path):
    log = log_of(tmp_path, [3.0, 2.0, 1.0])
    [enough] = check_log(spec(min_steps_logged=3), log, None)
    assert enough.passed and enough.found == "3 in metrics.jsonl"
    [short] = check_log(spec(min_steps_logged=4), log, None)
    assert not short.passed
    assert short.expected == "at least 4 entries with 'loss'"


def test_min_steps_logged_mentions_a_cut_short_log(tmp_path):
    out = output_with(tmp_path, "metrics.jsonl", '{"step": 1, "loss": 2}\n{"step": 2, "lo')
    log, problem = read_log(spec(), out)
    assert problem is None
    [result] = check_log(spec(min_steps_logged=2), log, problem)
    assert not result.passed and "cut short" in result.found


def test_no_log_when_one_is_needed(tmp_path):
    log, problem = read_log(spec(), tmp_path)
    assert log is None and "no training log" in problem
    [result] = check_log(spec(), log, problem)
    assert (result.name, result.passed) == ("log", False)
    assert "no training log" in result.found


def test_an_unreadable_log_is_a_failed_check_not_an_exception(tmp_path):
    out = output_with(tmp_path, "metrics.jsonl", '{"loss": 1}\nnot json\n{"loss": 2}\n')
    log, problem = read_log(spec(), out)
    assert log is None and "line 2 is not JSON" in problem
    assert not check_log(spec(), log, problem)[0].passed


def test_no_nan_fails_on_a_null_loss(tmp_path):
    log = log_of(tmp_path, [3.0, None, 1.0])
    result = by_name(check_loss(spec(loss={"no_nan": True}), log))["loss.no_nan"]
    assert not result.passed
    assert result.found == "None at step 2"


def test_no_nan_fails_on_nan_and_infinity(tmp_path):
    out = output_with(tmp_path, "metrics.jsonl", '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": Infinity}\n')
    log = parse_log(out / "metrics.jsonl", LogSpec())
    assert not by_name(check_loss(spec(loss={}), log))["loss.no_nan"].passed
    output_with(tmp_path, "metrics.jsonl", '{"step": 1, "loss": "nan"}\n')
    log = parse_log(out / "metrics.jsonl", LogSpec())
    result = by_name(check_loss(spec(loss={}), log))["loss.no_nan"]
    assert not result.passed and result.found == "'nan' at step 1"


def test_no_nan_passes_on_finite_losses_and_can_be_turned_off(tmp_path):
    log = log_of(tmp_path, [3.0, None, 1.0])
    assert "loss.no_nan" not in by_name(check_loss(spec(loss={"no_nan": False}), log))
    finite = log_of(tmp_path, [3.0, 2.0])
    assert by_name(check_loss(spec(loss={}), finite))["loss.no_nan"].found == "all finite"


def test_final_max_and_final_min(tmp_path):
    log = log_of(tmp_path, [5.0, 3.0, 2.5])
    results = by_name(check_loss(spec(loss={"final_max": 3.0, "final_min": 1.0}), log))
    assert results["loss.final_max"].passed and results["loss.final_min"].passed
    assert results["loss.final_max"].found == "2.5 at step 3"
    too_high = by_name(check_loss(spec(loss={"final_max": 2.0}), log))["loss.final_max"]
    assert not too_high.passed
    assert too_high.expected == "final loss <= 2"
    assert too_high.line() == "[FAIL] loss.final_max: expected final loss <= 2; found 2.5 at step 3"
    too_low = by_name(check_loss(spec(loss={"final_min": 2.6}), log))["loss.final_min"]
    assert not too_low.passed
    assert too_low.expected == "final loss >= 2.6"


def test_final_bounds_fail_when_the_final_loss_is_missing(tmp_path):
    log = log_of(tmp_path, [5.0, None])
    result = by_name(check_loss(spec(loss={"final_max": 100, "no_nan": False}), log))["loss.final_max"]
    assert not result.passed and result.found == "nothing at step 2"


def test_must_decrease(tmp_path):
    assert by_name(check_loss(spec(loss={"must_decrease": True}), log_of(tmp_path, [5.0, 6.0, 4.0])))[
        "loss.must_decrease"
    ].passed
    result = by_name(check_loss(spec(loss={"must_decrease": True}), log_of(tmp_path, [5.0, 4.0, 5.0])))[
        "loss.must_decrease"
    ]
    assert not result.passed and result.found == "first 5, final 5"
    empty = parse_log(write_log(tmp_path / "empty", [7.0]), LogSpec())
    assert not by_name(check_loss(spec(loss={"must_decrease": True}), empty))["loss.must_decrease"].passed


def test_metrics_every_final_and_mean(tmp_path):
    log = log_of(tmp_path, [3.0, 2.0, 1.0], grad_norm=[1.0, 9.0, 2.0])
    every = check_metric("grad_norm", MetricBound(max=5.0), log)
    assert not every.passed
    assert every.found == "every grad_norm = 9"
    assert every.expected == "every grad_norm <= 5"
    final = check_metric("grad_norm", MetricBound(max=5.0, at="final"), log)
    assert final.passed and final.found == "final grad_norm within bounds (last 2)"
    mean = check_metric("grad_norm", MetricBound(min=1.0, max=3.0, at="mean"), log)
    assert not mean.passed and mean.found == "mean grad_norm = 4"
    assert mean.expected == "mean grad_norm >= 1 and <= 3"
    assert check_metric("grad_norm", MetricBound(min=0.5), log).passed


def test_a_metric_never_logged_fails(tmp_path):
    result = check_metric(
        "tokens_per_second", MetricBound(min=1.0), log_of(tmp_path, [1.0], keys=("tokens_per_second",))
    )
    assert not result.passed and result.expected == "tokens_per_second logged"


def test_metrics_run_through_check_log(tmp_path):
    log = log_of(tmp_path, [3.0, 2.0], grad_norm=[1.0, 2.0])
    results = by_name(check_log(spec(metrics={"grad_norm": {"max": 1.5, "at": "final"}}), log, None))
    assert not results["metrics.grad_norm"].passed


def test_a_metric_logged_in_eval_records_is_checked(tmp_path):
    path = tmp_path / "trainer_state.json"
    path.write_text(
        json.dumps(
            {
                "log_history": [
                    {"step": 1, "loss": 2.0},
                    {"step": 1, "eval_loss": 1.9},
                    {"step": 2, "loss": 1.0},
                    {"step": 2, "eval_loss": 1.2},
                    {"step": 2, "train_loss": 1.5, "train_runtime": 3.0},
                ]
            }
        )
    )
    log = parse_log(path, LogSpec(), ("eval_loss", "train_runtime"))
    assert check_metric("eval_loss", MetricBound(max=5.0), log).passed
    assert check_metric("train_runtime", MetricBound(max=60.0), log).passed


def test_an_infinite_metric_fails_its_max_bound(tmp_path):
    log = log_of(tmp_path, [3.0, 2.0, 1.0], grad_norm=[1.0, float("inf"), 2.0])
    assert not check_metric("grad_norm", MetricBound(max=10.0), log).passed


# all checks together ---------------------------------------------------------------------


def test_a_spec_without_log_requirements_needs_no_log(tmp_path):
    the_spec = spec(min_steps_logged=0)
    out = output_with(tmp_path, "stderr.log", "all good\n")
    stderr = out / "stderr.log"
    results, log = run_checks(the_spec, ok_outcome(), out, stderr)
    assert log is None
    assert [r.name for r in results] == ["exit_code", "stderr.forbidden_patterns"]
    assert all(r.passed for r in results)
    # ...and with no output folder at all
    results, _ = run_checks(the_spec, ok_outcome(), tmp_path / "never-made", stderr)
    assert all(r.passed for r in results)


def test_run_checks_in_reading_order(tmp_path):
    out = tmp_path / "out"
    write_log(out, [4.0, 2.0], grad_norm=[1.0, 1.0])
    stderr = out / "stderr.log"
    stderr.write_text("")
    the_spec = spec(expected_files=["metrics.jsonl"], loss={"final_max": 3}, metrics={"grad_norm": {"max": 2}})
    results, log = run_checks(the_spec, ok_outcome(leftovers=["1 x"]), out, stderr)
    assert [r.name for r in results] == [
        "exit_code",
        "processes",
        "stderr.forbidden_patterns",
        "expected_files",
        "min_steps_logged",
        "loss.no_nan",
        "loss.final_max",
        "metrics.grad_norm",
    ]
    assert [r.passed for r in results] == [True, False, True, True, True, True, True, True]
    assert log is not None and log.final.loss == 2.0
    assert results[0].as_dict()["name"] == "exit_code"


# the root error behind a failure -------------------------------------------------------------

# What torchrun (torch 2.x) leaves in stderr when rank 1 raises and rank 0 then fails in a
# collective: each rank's traceback under its [rankN]: prefix, interleaved, then torchrun's own
# traceback and its summary, which names no exception.
TORCHRUN_STDERR = """\
W0101 12:00:00.000000 4242 torch/distributed/run.py:793] Setting OMP_NUM_THREADS environment variable for each \
process to be 1 in default
[rank1]: Traceback (most recent call last):
[rank0]:[W101 12:00:05.000000 ProcessGroupGloo.cpp:1234] Warning: a rank waits in allreduce
[rank1]:   File "/work/examples/tinylm/train.py", line 212, in <module>
[rank1]:     main()
[rank0]: Traceback (most recent call last):
[rank1]:   File "/work/examples/tinylm/train.py", line 180, in main
[rank1]:     loss = step(model, batch)
[rank1]:            ^^^^^^^^^^^^^^^^^^
[rank0]:   File "/work/examples/tinylm/train.py", line 212, in <module>
[rank1]: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 1; 79.15 GiB total capacity; \
77.01 GiB already allocated; LONG
[rank0]:     main()
[rank0]: RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500
E0101 12:00:06.000000 4242 torch/distributed/elastic/multiprocessing/api.py:869] failed (exitcode: 1) local_rank: 1 \
(pid: 4244) of binary: /venv/bin/python
Traceback (most recent call last):
  File "/venv/bin/torchrun", line 8, in <module>
    sys.exit(main())
  File "/venv/lib/python3.11/site-packages/torch/distributed/run.py", line 892, in main
    run(args)
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
train.py FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2025-01-01_12:00:06
  host      : gpu-box
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 4243)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2025-01-01_12:00:06
  host      : gpu-box
  rank      : 1 (local_rank: 1)
  exitcode  : 1 (pid: 4244)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
""".replace("LONG", "x" * 300 + ")")


def test_the_root_error_is_the_first_failing_ranks_exception_not_torchruns_summary(tmp_path):
    stderr = tmp_path / "stderr.log"
    stderr.write_text(TORCHRUN_STDERR)
    oom = (
        "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 1; 79.15 GiB total capacity; "
        "77.01 GiB already allocated; " + "x" * 300 + ")"
    )
    assert root_error(stderr) == oom
    results, _ = run_checks(spec(), ok_outcome(exit_code=1), tmp_path / "out", stderr)
    failed = [r for r in results if not r.passed]
    assert [r.name for r in failed] == ["exit_code", "stderr.forbidden_patterns", "log"]
    assert failed[0].cause == oom and failed[1].cause is None
    reason = failure_reason(failed)
    assert reason.startswith(
        oom + " (exit_code: exit code 1; stderr.forbidden_patterns: line 2: [rank1]: Traceback"
    )  # whole, however long
    assert failed[0].line().splitlines()[1] == f"    root error: {oom}"


def test_the_root_error_of_plain_tracebacks_and_chained_exceptions(tmp_path):
    stderr = tmp_path / "stderr.log"
    stderr.write_text(
        "loading...\n"
        "Traceback (most recent call last):\n"
        '  File "train.py", line 3, in load\n'
        "    open(path)\n"
        "FileNotFoundError: [Errno 2] No such file or directory: 'data.bin'\n"
        "\n"
        "During handling of the above exception, another exception occurred:\n"
        "\n"
        "Traceback (most recent call last):\n"
        '  File "train.py", line 9, in <module>\n'
        "    load()\n"
        "ValueError: no training data\n"
        "  the data folder was empty\n"
        "Traceback (most recent call last):\n"
        "OSError: a later, separate failure\n"
    )
    assert root_error(stderr) == "ValueError: no training data"


def test_no_root_error_without_a_traceback_or_for_a_run_stopped_at_a_nan(tmp_path):
    stderr = tmp_path / "stderr.log"
    stderr.write_text("Killed\n")
    assert root_error(stderr) is None
    assert root_error(tmp_path / "missing.log") is None
    stderr.write_text('Traceback (most recent call last):\n  File "x", line 1\n')  # cut before its exception
    assert root_error(stderr) is None
    # What torchrun prints as the harness stops it is no cause of the NaN that made it stop.
    stderr.write_text(
        "Traceback (most recent call last):\ntorch.distributed.elastic.multiprocessing.api.SignalException: "
        "Process 7 got signal: 15\n"
    )
    stopped = ok_outcome(exit_code=None, signal=15, stopped_by="loss nan at step 4 in train_log.jsonl")
    results, _ = run_checks(spec(), stopped, tmp_path / "out", stderr)
    assert all(r.cause is None for r in results)
    assert failure_reason([r for r in results if not r.passed and r.severity == "fail"]).startswith(
        "fail_fast: loss nan at step 4"
    )


def test_a_run_stopped_at_a_forbidden_line_fails_once_with_its_root_error(tmp_path):
    stderr = tmp_path / "stderr.log"
    stderr.write_text(TORCHRUN_STDERR)
    stopped = ok_outcome(
        exit_code=None,
        signal=15,
        stopped_by="'Traceback (most recent call last)' at stderr line 2: [rank1]: Traceback (most recent call last):",
    )
    results, _ = run_checks(spec(min_steps_logged=0), stopped, tmp_path / "out", stderr)
    failed = [r for r in results if not r.passed and r.severity == "fail"]
    assert [r.name for r in failed] == ["fail_fast"]
    assert failed[0].cause is not None and failed[0].cause.startswith("RuntimeError: CUDA out of memory")
    assert [r.name for r in results if r.severity == "info"] == ["stderr.forbidden_patterns"]
    assert failed[0].notes == ("stderr.forbidden_patterns: line 2: [rank1]: Traceback (most recent call last):",)
    assert failure_reason(failed).startswith(
        "RuntimeError: CUDA out of memory"
    ) and "(fail_fast: 'Traceback" in failure_reason(failed)


def test_a_run_that_was_not_stopped_keeps_every_failure_its_own():
    results = under_the_stop(
        [check_exit(ok_outcome(exit_code=1)), CheckResult("min_steps_logged", False, "at least 5", "2")]
    )
    assert [(r.name, r.severity, r.notes) for r in results] == [
        ("exit_code", "fail", ()),
        ("min_steps_logged", "fail", ()),
    ]


def test_a_launcher_error_is_never_the_root_error(tmp_path: Path):
    """torchrun's ChildFailedError only says a rank failed; a rank that exited without a traceback leaves no root
    error."""
    stderr = tmp_path / "stderr.log"
    launcher_only = [
        "rank 1 gives up",
        "Traceback (most recent call last):",
        '  File "torchrun", line 8, in <module>',
        "[W1130 09:49:09 TCPStore.cpp:138] [c10d] recvValueWithTimeout failed: Connection was likely closed.",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "Traceback (most recent call last):",
        '  File "torchrun", line 8, in <module>',
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "============================================================",
    ]
    stderr.write_text("\n".join(launcher_only) + "\n")
    assert root_error(stderr) is None
    rank_after = [
        *launcher_only,
        "[rank0]: Traceback (most recent call last):",
        '[rank0]:   File "t.py", line 2',
        "[rank0]: RuntimeError: the rank's own",
    ]
    stderr.write_text("\n".join(rank_after) + "\n")
    assert root_error(stderr) == "RuntimeError: the rank's own"
