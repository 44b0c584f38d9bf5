"""Every way a run or the harness itself can fail, with real processes: nothing hangs, nothing
leaks, nothing is lost.

Each case runs the real harness, then checks that no process of the run is left (by a tag
in every command line), that no device lease is held, and that results.json is valid and
names the cause. docs/faults.md lists the cases, these and those proved elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from harness.backends.local import SIMULATED_CEILING
from harness.records import load_results

from ..conftest import REPO, tagged
from ..gpu_stand_ins import BROKEN_DRIVER, MI300_JSON
from .common import (
    assert_clean,
    expect_exit,
    git_project,
    harness_env,
    harness_in,
    machine,
    new_tag,
    record,
    run_harness_expecting,
    run_one,
    start,
    stop,
    wait_until,
    write_spec,
    writes_log,
)

pytestmark = pytest.mark.e2e

SECRET = "s3cr3t-value"


# the run fails -----------------------------------------------------------------------------


def test_exit_1(harness, tmp_path: Path) -> None:
    spec, _ = run_one(harness, tmp_path, "exits_1", "import sys; sys.exit(1)")
    assert spec["outcome"] == "failed" and spec["reason"] == "exit_code: exit code 1"
    assert spec["exit_code"] == 1


def test_sigsegv(harness, tmp_path: Path) -> None:
    # No core file: the test must not write one wherever it runs.
    code = (
        "import os, resource, signal; resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); os.kill(os.getpid(), "
        "signal.SIGSEGV)"
    )
    spec, _ = run_one(harness, tmp_path, "segfaults", code)
    assert spec["outcome"] == "failed" and spec["reason"] == "exit_code: killed by signal SIGSEGV"
    assert spec["exit_code"] is None


def test_a_reused_run_dir_forgets_an_earlier_interruption(tmp_path: Path) -> None:
    """An interrupted run leaves its marker behind; the next run in that dir must not take
    its own signal deaths for interruptions."""
    tag = new_tag()
    path = write_spec(
        tmp_path / "project", "terminated", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)", tag
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".interrupted").touch()
    run_harness_expecting(1, tmp_path, "run", str(path), "--fake-gpus", "1", "--run-dir", str(run_dir))
    assert record(assert_clean(run_dir, tag), "terminated")["reason"] == "exit_code: killed by signal SIGTERM"


def test_hang_past_the_timeout(harness, tmp_path: Path) -> None:
    began = time.monotonic()
    spec, _ = run_one(harness, tmp_path, "hangs", "import time; time.sleep(120)", timeout=1)
    assert spec["outcome"] == "failed" and spec["reason"].startswith("exit_code: timed out after 1.")
    assert spec["duration"] < 8
    assert time.monotonic() - began < 30


GRANDCHILD_LEFT_BEHIND = r"""
import subprocess, sys
subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(120)", sys.argv[1]], start_new_session=sys.argv[3] == "own-session"
)
print("exiting, my child still runs", flush=True)
"""


@pytest.mark.parametrize("where", ["same-group", "own-session"])
def test_a_grandchild_hangs_while_its_parent_exits(harness, tmp_path: Path, where: str) -> None:
    """A torchrun rank left running: in the run's group, or in a session of its own (as
    torchrun starts its ranks) and orphaned before any census saw it."""
    spec, _ = run_one(harness, tmp_path, "leaves_a_child", GRANDCHILD_LEFT_BEHIND.replace("sys.argv[3]", repr(where)))
    assert spec["outcome"] == "failed"
    assert spec["reason"].startswith("processes: 1 left running and killed: "), spec["reason"]
    assert spec["exit_code"] == 0


# the training log is bad -------------------------------------------------------------------


GOOD = ['{"step": 1, "loss": 3.0}', '{"step": 2, "loss": 2.5}', '{"step": 3, "loss": 2.0}']


@pytest.mark.parametrize(
    ("name", "text", "outcome", "cause"),
    [
        (
            "train_log.jsonl",
            "\n".join(GOOD) + '\n{"step": 4, "lo',
            "passed",
            "3 in train_log.jsonl (the last line (4) is cut short and was skipped)",
        ),
        (
            "train_log.jsonl",
            "\n".join([GOOD[0], "{not json", *GOOD[1:]]) + "\n",
            "failed",
            "line 2 is not JSON: Expecting property name enclosed in double quotes",
        ),
        (
            "train_log.jsonl",
            "\n".join([GOOD[0], '{"step": 2, "loss": nan}', GOOD[2]]) + "\n",
            "failed",
            "line 2 is not JSON",
        ),
        (
            "trainer_logs.json",
            json.dumps([{"global_step": s, "loss": 3.0 - s / 10} for s in (1, 2, 3)])[:-30],
            "passed",
            "2 in trainer_logs.json (the log is cut short (no closing ']'); read its first 2 complete records)",
        ),
        (
            "trainer_state.json",
            json.dumps({"log_history": [{"step": 1, "loss": 2.0}]})[:-3],
            "failed",
            "trainer_state.json is not valid JSON (line 1): Expecting ',' delimiter",
        ),
        ("trainer_logs.json", '{"not": "an array"}', "failed", "expected a JSON array of records, found dict"),
    ],
    ids=[
        "jsonl-cut-mid-line",
        "jsonl-malformed-line",
        "jsonl-bare-nan",
        "forgather-cut-mid-record",
        "hf-truncated",
        "forgather-not-an-array",
    ],
)
def test_a_truncated_or_malformed_training_log(
    harness, tmp_path: Path, name: str, text: str, outcome: str, cause: str
) -> None:
    """A log cut short mid-write counts its complete records; a malformed one fails, saying where."""
    tag = new_tag()
    path = write_spec(
        tmp_path / "project",
        "bad_log",
        writes_log(tmp_path, name, text),
        tag,
        min_steps_logged=2,
        loss={"final_max": 5},
    )
    run = harness("run", str(path), "--fake-gpus", "1", cwd=tmp_path / "project")
    assert run.code == (0 if outcome == "passed" else 1), run.output
    spec = record(assert_clean(run.run_dir, tag), "bad_log")
    assert spec["outcome"] == outcome
    if outcome == "passed":
        assert next(c["found"] for c in spec["checks"] if c["name"] == "min_steps_logged") == cause
    else:
        assert spec["reason"].startswith(f"log: {run.run_dir / 'specs' / 'bad_log'}/") and cause in spec["reason"], (
            spec["reason"]
        )


@pytest.mark.parametrize(
    ("loss", "found"), [("NaN", "nan"), ('"nan"', "'nan'"), ('"NaN"', "'NaN'"), ("null", "None"), ("Infinity", "inf")]
)
def test_a_loss_that_is_not_a_number_stops_the_run_at_once(harness, tmp_path: Path, loss: str, found: str) -> None:
    """The run would go on for a minute; fail-fast stops it at the bad record and names it."""
    text = "\n".join([*GOOD, f'{{"step": 4, "loss": {loss}}}']) + "\n"
    spec, output = run_one(
        harness, tmp_path, "bad_loss", writes_log(tmp_path, "train_log.jsonl", text, sleep=60), loss={}, timeout=90
    )
    # One cause, one failure: what the stop left unchecked is shown under it, not as more failures.
    assert spec["reason"] == f"fail_fast: loss {found} at step 4 in train_log.jsonl; the run was stopped there"
    assert spec["duration"] < 15
    assert "[FAIL] fail_fast: expected no forbidden stderr pattern" in output


def test_nan_in_real_training_stops_it_at_that_step(harness, tmp_path: Path) -> None:
    """The example at a learning rate of 1000 logs NaN from step 10 of 300: stopped there,
    before its next log entry (step 20)."""
    spec = yaml.safe_load((REPO / "specs" / "tinylm_smoke.yaml").read_text())
    spec.update(id="huge_lr", args={**spec["args"], "lr": 1000.0, "max_steps": 300})
    path = tmp_path / "huge_lr.yaml"
    path.write_text(yaml.safe_dump(spec))
    run = harness("run", str(path), "--fake-gpus", "1")
    assert run.code == 1, run.output
    result = record(assert_clean(run.run_dir, str(run.run_dir)), "huge_lr")
    assert result["reason"].startswith("fail_fast: loss nan at step 10 in train_log.jsonl; the run was stopped there")
    assert result["steps_logged"] == 2 and [step for step, _ in result["loss_curve"]] == [1, 10]


def test_records_without_a_loss_are_not_steps(harness, tmp_path: Path) -> None:
    """Missing loss values (eval or summary records) are skipped, and too few steps fail."""
    text = "\n".join([GOOD[0], '{"step": 2, "eval_loss": 2.6}', GOOD[1], '{"step": 3}']) + "\n"
    spec, _ = run_one(
        harness, tmp_path, "missing_loss", writes_log(tmp_path, "train_log.jsonl", text), min_steps_logged=3
    )
    assert spec["reason"] == "min_steps_logged: 2 in train_log.jsonl"
    assert spec["steps_logged"] == 2


# stderr ------------------------------------------------------------------------------------

FLOODS_STDERR = r"""
import sys
line = b"x" * 99 + b"\n"
block = line * 10486
for _ in range({blocks}):
    sys.stderr.buffer.write(block)
sys.stderr.buffer.write(b"Traceback (most recent call last):\n")
"""


def peak_rss_mb(tmp_path: Path, spec_path: Path, run_dir: Path) -> float:
    """The harness's peak resident memory, its runs included: the kernel's high-water mark
    (ru_maxrss from wait4), so no short peak is missed between samples."""
    argv = [sys.executable, "-m", "harness", "run", str(spec_path), "--fake-gpus", "1", "--run-dir", str(run_dir)]
    proc = subprocess.Popen(
        argv, cwd=spec_path.parent, env=harness_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 1
    return usage.ru_maxrss / 1024


def test_100_mb_of_stderr_keeps_the_harness_memory_bounded(tmp_path: Path, record_property) -> None:
    """The forbidden line comes after 100 MB: found, with its line number, in bounded memory."""
    tag = new_tag()
    small = write_spec(tmp_path / "small", "floods_stderr", FLOODS_STDERR.format(blocks=0), tag)
    large = write_spec(tmp_path / "large", "floods_stderr", FLOODS_STDERR.format(blocks=100), tag)
    baseline = peak_rss_mb(tmp_path, small, tmp_path / "run-small")
    peak = peak_rss_mb(tmp_path, large, tmp_path / "run-large")
    record_property("harness_peak_rss_mb", {"1 line": round(baseline, 1), "100 MB": round(peak, 1)})
    print(f"harness peak RSS: {baseline:.1f} MB with one stderr line, {peak:.1f} MB with 100 MB of stderr")
    spec = record(assert_clean(tmp_path / "run-large", tag), "floods_stderr")
    assert (tmp_path / "run-large" / "specs" / "floods_stderr" / "stderr.log").stat().st_size > 100 * 10**6
    assert spec["reason"] == "stderr.forbidden_patterns: line 1048601: Traceback (most recent call last):"
    assert len(spec["stderr_tail"]) < 20_000
    assert peak - baseline < 20, f"the harness grew by {peak - baseline:.1f} MB reading 100 MB of stderr"


# the harness is interrupted ----------------------------------------------------------------


def finished(output_dir: Path) -> bool:
    """Whether the spec's own record replaced the stand-in written when it started."""
    try:
        return json.loads((output_dir / "result.json").read_text())["outcome"] != "error"
    except (OSError, ValueError):
        return False


def group_members(pgid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


SLEEPER_WITH_A_GRANDCHILD = """
import subprocess, sys, time
subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(121)", sys.argv[1], "grand" + "child"], start_new_session=True
)
time.sleep(120)
"""


def interrupt_mid_run(tmp_path: Path, devices: int, to_group: bool, signum: signal.Signals) -> None:
    """Send `signum` to the harness (its process group, as a terminal or `kill -- -PGID` does, or
    the harness process alone, as nox, `timeout` or a CI runner do) while one spec has finished
    and another runs with a grandchild in a session of its own: every process gone within 5 s,
    the finished and the interrupted spec both in a partial results.json, exit code 130."""
    tag = new_tag()
    project = tmp_path / "project"
    # The quick spec is planned first (a longer timeout is a longer expected run).
    write_spec(project / "specs", "quick", "print('done')", tag, timeout=300)
    write_spec(project / "specs", "sleeper", SLEEPER_WITH_A_GRANDCHILD, tag, timeout=200)
    run_dir = tmp_path / "run"
    harness = start(project, tmp_path, "--fake-gpus", str(devices), "--run-dir", str(run_dir))
    try:
        wait_until(
            lambda: any(p.endswith("grandchild") for p in tagged(tag)) and finished(run_dir / "specs" / "quick"),
            harness,
            seconds=60,
        )
        interrupted = time.monotonic()
        if to_group:
            os.killpg(harness.pid, signum)
        else:
            harness.send_signal(signum)
        output = harness.communicate(timeout=30)[0]
        exited = time.monotonic()
        while (tagged(tag) or group_members(harness.pid)) and time.monotonic() - exited < 10:
            time.sleep(0.05)
        # Nothing outlives the harness: how long it takes to write its records depends on the
        # machine's load, so the bound is on what is left once it has exited.
        print(
            f"harness exited {exited - interrupted:.2f} s after {signum.name}; everything gone "
            f"{time.monotonic() - exited:.2f} s later"
        )
        assert time.monotonic() - exited < 5, (tagged(tag), group_members(harness.pid))
        assert harness.returncode == 130, output
        results = assert_clean(run_dir, tag)
        assert results["interrupted"] is True
        assert record(results, "quick")["outcome"] == "passed"
        sleeper = record(results, "sleeper")
        assert (sleeper["outcome"], sleeper["reason"]) == (
            "error",
            "interrupted: the harness stopped before this run finished; nothing of it was left running",
        ), sleeper
    finally:
        stop(tag, harness)


@pytest.mark.parametrize(
    ("devices", "to_group"),
    [(1, False), (2, True), (2, False)],
    ids=["in-process", "xdist-ctrl-c", "xdist-harness-pid-only"],
)
def test_sigint_to_the_harness_mid_run(tmp_path: Path, devices: int, to_group: bool) -> None:
    """Ctrl-C (SIGINT to the harness's process group, as a terminal sends it) or SIGINT to the
    harness process alone (as nox forwards it)."""
    interrupt_mid_run(tmp_path, devices, to_group, signal.SIGINT)


@pytest.mark.parametrize(
    ("signum", "devices", "to_group"),
    [
        (signal.SIGTERM, 1, False),
        (signal.SIGTERM, 2, False),
        (signal.SIGTERM, 2, True),
        (signal.SIGHUP, 1, False),
        (signal.SIGHUP, 2, True),
    ],
    ids=[
        "sigterm-in-process",
        "sigterm-xdist-harness-pid-only",
        "sigterm-xdist-group",
        "sighup-in-process",
        "sighup-xdist-group",
    ],
)
def test_sigterm_and_sighup_do_what_sigint_does(
    tmp_path: Path, signum: signal.Signals, devices: int, to_group: bool
) -> None:
    """CI cancellation, `timeout`, Slurm preemption (SIGTERM) and a closed terminal (SIGHUP)."""
    interrupt_mid_run(tmp_path, devices, to_group, signum)


# secrets -----------------------------------------------------------------------------------


def test_secrets_stay_out_of_everything_the_harness_writes(harness, tmp_path: Path) -> None:
    """The run's env holds a token that the run echoes and fails on: the harness's files and
    output mask it; only the child's own stderr.log keeps what the child wrote."""
    tag = new_tag()
    code = "import os, sys; print('token is', os.environ['HF_TOKEN'], file=sys.stderr); sys.exit(1)"
    path = write_spec(tmp_path / "project", "leaky", code, tag, env={"HF_TOKEN": SECRET}, args={"token": SECRET})
    run = harness("run", str(path), "--fake-gpus", "1", cwd=tmp_path / "project")
    assert run.code == 1, run.output
    spec = record(assert_clean(run.run_dir, tag), "leaky")
    assert "token is ***" in spec["stderr_tail"]
    output_dir = run.run_dir / "specs" / "leaky"
    assert SECRET in (output_dir / "stderr.log").read_text()  # the child's own file, as it wrote it
    written = ["launch.json", "result.json"]
    for name in written:
        assert SECRET not in (output_dir / name).read_text(), name
    for name in ["results.json", "report.html", "junit.xml"]:
        assert SECRET not in (run.run_dir / name).read_text(), name
    assert SECRET not in run.output
    assert "token is ***" in run.output


def test_a_flaky_spec_passes_on_retry_and_keeps_both_attempts(harness, tmp_path: Path) -> None:
    """`retries: 1` with `retry_on: [code]`: the first attempt fails, the second passes; the spec is
    flaky, both outcomes kept. (Without `retry_on`, an exit 1 that shows no machine fault is code, not retried.)"""
    marker = tmp_path / "ran-once"
    spec = {
        "id": "flaky",
        "gpus": 0,
        "timeout": 30,
        "min_steps_logged": 0,
        "retries": 1,
        "retry_on": ["code"],
        "command": [
            "{python}",
            "-c",
            "import os, sys; first = not os.path.exists(sys.argv[1]); open(sys.argv[1], 'w').close(); "
            "sys.exit(1 if first else 0)",
            str(marker),
        ],
    }
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "flaky.yaml").write_text(yaml.safe_dump(spec))
    run = harness("run", "--specs", str(specs))
    assert run.code == 0, run.output
    record = run.spec("flaky")
    assert record["outcome"] == "passed" and record["flaky"] is True
    assert [(a["attempt"], a["outcome"]) for a in record["attempts"]] == [(1, "failed"), (2, "passed")]
    assert record["attempts"][0]["reason"] == "exit_code: exit code 1"
    assert Path(record["attempts"][0]["output_dir"], "stderr.log").exists()
    assert [a["failure_kind"] for a in record["attempts"]] == ["code", None]
    assert any(w.startswith("code retry: passed on attempt 2") for w in record["warnings"])
    assert re.search(r"^FLAKY\s+flaky\s", run.output, re.M), run.output


# devices and drivers -----------------------------------------------------------------------


def device_project(tmp_path: Path) -> Path:
    """A project with one 1-GPU spec that writes the device variables it was started with."""
    folder = tmp_path / "project"
    (folder / "specs").mkdir(parents=True)
    (folder / "record_env.py").write_text(
        "import json, os, sys\nseen = {k: v for k, v in os.environ.items() if "
        "k.endswith(('_VISIBLE_DEVICES', 'DEVICE_KIND'))}\njson.dump(seen, open(os.path.join(sys.argv[1], "
        "'env.json'), 'w'))\n"
    )
    spec = {
        "id": "on_a_gpu",
        "command": ["{python}", "record_env.py", "{output_dir}"],
        "gpus": 1,
        "timeout": 60,
        "min_steps_logged": 0,
    }
    (folder / "specs" / "on_a_gpu.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def plan(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return harness_in(device_project(tmp_path), env, "plan", *args)


@pytest.mark.parametrize(
    ("nvidia", "gpus", "said"),
    [
        (
            None,
            "12",
            "error: --gpus 12 needs 12 visible devices, found 0 (no GPU found: nvidia-smi lists none; "
            "rocm-smi or amd-smi lists none); --fake-gpus 12 simulates devices without a GPU",
        ),
        (
            {},
            "3",
            "error: --gpus 3 needs 3 visible devices, found 2: 2 GPUs [0, 1] from nvidia-smi, 81559 MiB each "
            "(busy: 1 has 30720 MiB in use); --fake-gpus 3 simulates devices without a GPU",
        ),
    ],
)
def test_gpus_beyond_the_visible_devices_is_refused(tmp_path: Path, nvidia: dict | None, gpus: str, said: str) -> None:
    project, env = device_project(tmp_path), machine(tmp_path, nvidia)
    for args in (("plan", "--gpus", gpus), ("run", "--gpus", gpus, "--run-dir", str(tmp_path / "run"))):
        done = harness_in(project, env, *args)
        assert (done.returncode, done.stderr.strip()) == (2, said), done.stdout
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize(
    ("variable", "value", "code", "said"),
    [
        (
            "CUDA_VISIBLE_DEVICES",
            "0,0",
            2,
            "error: CUDA_VISIBLE_DEVICES='0,0' names device 0 twice ('0'); the runtime refuses such a list, "
            "so name each device once",
        ),
        (
            "HIP_VISIBLE_DEVICES",
            "1,1",
            2,
            "error: HIP_VISIBLE_DEVICES='1,1' names device 1 twice ('1'); the runtime refuses such a list, "
            "so name each device once",
        ),
        (
            "CUDA_VISIBLE_DEVICES",
            "abc",
            0,
            "devices: no GPU (CUDA_VISIBLE_DEVICES='abc' names no device (dropped 'abc': the runtime stops "
            "at the first invalid entry); CPU only",
        ),
        (
            "CUDA_VISIBLE_DEVICES",
            "1,-1,0",
            0,
            "devices: 1 GPU [1] from CUDA_VISIBLE_DEVICES (dropped '-1', '0': the runtime stops at the first "
            "invalid entry), 81559 MiB",
        ),
        (
            "CUDA_VISIBLE_DEVICES",
            "1,7",
            0,
            "devices: 1 GPU [1] from CUDA_VISIBLE_DEVICES (dropped '7': nvidia-smi lists no such device, and "
            "the runtime stops at the first invalid entry)",
        ),
    ],
)
def test_visible_devices_are_read_as_the_runtime_reads_them(
    tmp_path: Path, variable: str, value: str, code: int, said: str
) -> None:
    done = plan(tmp_path, {**machine(tmp_path, nvidia={}), variable: value})
    assert done.returncode == code, done.stdout + done.stderr
    assert said in (done.stderr if code else done.stdout)


def test_a_broken_nvidia_driver_is_an_error_never_no_gpu(tmp_path: Path) -> None:
    project, broken = device_project(tmp_path), machine(tmp_path, nvidia={"code": 9})
    said = (
        f"error: nvidia-smi failed (exit 9): {BROKEN_DRIVER}; fix the driver, or run without GPUs "
        "(CUDA_VISIBLE_DEVICES= or --fake-gpus N)"
    )
    for args in (("plan",), ("run", "--run-dir", str(tmp_path / "run"))):
        done = harness_in(project, broken, *args)
        assert (done.returncode, done.stderr.strip()) == (2, said), done.stdout
    # Hiding every GPU, or simulating them, needs no driver.
    assert harness_in(project, {**broken, "CUDA_VISIBLE_DEVICES": ""}, "plan").returncode == 0
    assert harness_in(project, broken, "plan", "--fake-gpus", "1").returncode == 0


def test_amd_gpus_are_found_by_rocm_smi_and_children_get_the_amd_variables(harness, tmp_path: Path) -> None:
    amd = machine(tmp_path, rocm=MI300_JSON)
    assert (
        "devices: 2 AMD GPUs [0, 1] from rocm-smi or amd-smi, 196288 MiB each (busy: 0 has 282 MiB in use; 1 "
        "has 10240 MiB in use)" in plan(tmp_path / "plan", amd).stdout
    )
    run = harness(
        "run", cwd=device_project(tmp_path / "run"), env={**amd, "ROCR_VISIBLE_DEVICES": "GPU-2cb7b3e2c1a0f5d1,0"}
    )
    assert run.code == 0, run.output
    seen = json.loads((run.run_dir / "specs" / "on_a_gpu" / "env.json").read_text())
    assert (
        seen["ROCR_VISIBLE_DEVICES"] in ("GPU-2cb7b3e2c1a0f5d1", "0")
        and seen["HIP_VISIBLE_DEVICES"] == seen["CUDA_VISIBLE_DEVICES"] == "0"
    )
    assert seen["TRAINSPEC_DEVICE_KIND"] == "rocm"


# the repository-unchanged proof ------------------------------------------------------------


def test_a_run_dir_two_levels_inside_the_repository_is_not_a_write_into_it(tmp_path: Path) -> None:
    project = git_project(tmp_path / "project", "print('nothing written')")
    done = harness_in(project, harness_env(tmp_path), "run", "--run-dir", "out/runs/r1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wrote into the repository" not in done.stdout
    assert load_results(project / "out" / "runs" / "r1")["specs"][0]["outcome"] == "passed"


def test_a_write_deep_inside_an_untracked_folder_that_already_existed_is_seen(tmp_path: Path) -> None:
    project = git_project(tmp_path / "project", "open('data/sub/new.txt', 'w').write('x')")
    (project / "data" / "sub").mkdir(parents=True)
    (project / "data" / "sub" / "old.txt").write_text("there before the run")
    done = harness_in(project, harness_env(tmp_path), "run", "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the run wrote into the repository: data/sub/new.txt" in done.stdout
    assert load_results(tmp_path / "run")["repo_writes"] == ["data/sub/new.txt"]


# damaged caches ----------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["binary", "folder"])
def test_a_damaged_duration_cache_costs_a_warning_never_a_run(tmp_path: Path, damage: str) -> None:
    project = git_project(tmp_path / "project", "print('fine')")
    cache = tmp_path / "cache" / "durations.json"
    if damage == "binary":
        cache.parent.mkdir(parents=True)
        cache.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff" * 100)
    else:
        (cache / "inside").mkdir(parents=True)
    planned = harness_in(project, harness_env(tmp_path), "plan")
    expect_exit(planned, 0)
    assert planned.stderr.count("the duration cache is unreadable") == 1
    output = run_harness_expecting(0, tmp_path, "run", "--run-dir", str(tmp_path / "run"))
    if damage == "binary":
        assert set(json.loads(cache.read_text())) == {"writes"}  # rewritten by the run
        again = harness_in(project, harness_env(tmp_path), "plan")
        assert "unreadable" not in again.stderr and re.search(
            r"writes\s+0\s+whole\s+[\d.]+s\s+recorded", again.stdout
        ), again.stdout + again.stderr
    else:
        assert "durations not saved" in output
        assert (cache / "inside").is_dir()


def test_a_garbage_lease_state_in_a_reused_run_dir_costs_a_warning_never_a_run(tmp_path: Path) -> None:
    tag = new_tag()
    path = write_spec(tmp_path / "project", "holds_a_device", "print('fine')", tag)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "leases.json").write_bytes(b'{"holders": {"0": 7}, "queue": "x"}')
    run_harness_expecting(0, tmp_path, "run", str(path), "--fake-gpus", "1", "--run-dir", str(tmp_path / "run"))
    assert record(assert_clean(tmp_path / "run", tag), "holds_a_device")["outcome"] == "passed"


# the run directory -------------------------------------------------------------------------


def test_a_run_dir_in_use_by_a_live_run_is_refused_and_a_dead_runs_is_taken_over(tmp_path: Path) -> None:
    tag = new_tag()
    project = tmp_path / "project"
    write_spec(project / "specs", "sleeper", "import time; time.sleep(120)", tag)
    run_dir = tmp_path / "run"
    first = start(project, tmp_path, "--fake-gpus", "1", "--run-dir", str(run_dir))
    try:
        wait_until(lambda: bool(tagged(tag)), first, seconds=60)
        second = harness_in(project, harness_env(tmp_path), "run", "--fake-gpus", "1", "--run-dir", str(run_dir))
        expect_exit(second, 2)
        assert f"is in use by a live run (pid {first.pid}, since " in second.stderr, second.stderr
        assert tagged(tag), "the refused run must leave the first one alone"
        # The first run dies without a word (SIGKILL to everything it started): its claim stays, its owner is dead.
        stop(tag, first)
        assert (run_dir / "owner.json").exists()
        write_spec(project / "specs", "sleeper", "print('done')", tag)
        run_harness_expecting(0, tmp_path, "run", "--fake-gpus", "1", "--run-dir", str(run_dir))
        assert record(assert_clean(run_dir, tag), "sleeper")["outcome"] == "passed"
        assert not (run_dir / "owner.json").exists()
    finally:
        stop(tag, first)


@pytest.mark.parametrize(
    ("where", "said"),
    [("file", "is a file"), ("file/run", "cannot be created: Not a directory"), ("/sys/kernel", "is not writable: ")],
    ids=["an existing file", "cannot be created", "not writable"],
)
def test_a_run_dir_that_cannot_hold_a_run_is_one_line_and_exit_2(tmp_path: Path, where: str, said: str) -> None:
    project = tmp_path / "project"
    write_spec(project / "specs", "quick", "print('done')", new_tag())
    (tmp_path / "file").write_text("not a folder")
    run_dir = where if where.startswith("/") else str(tmp_path / where)
    output = run_harness_expecting(2, tmp_path, "run", "--fake-gpus", "1", "--run-dir", run_dir)
    errors = [line for line in output.splitlines() if run_dir in line and said in line]
    assert len(errors) == 1, output
    assert "results in" not in output


# the terminal goes away; pytest's own output ------------------------------------------------


@pytest.mark.parametrize("devices", [1, 2], ids=["in-process", "xdist"])
def test_output_piped_into_head_the_run_goes_on(tmp_path: Path, devices: int) -> None:
    """`python -m harness run | head -1`: the reader leaves after the first line; the specs
    still run and the records are written."""
    tag = new_tag()
    project = tmp_path / "project"
    write_spec(project / "specs", "slow", "import time; time.sleep(2); print('done')", tag)
    write_spec(project / "specs", "other", "import time; time.sleep(1); print('done')", tag)
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "harness", "run", "--fake-gpus", str(devices), "--run-dir", str(run_dir)]
    harness = subprocess.Popen(
        argv, cwd=project, env=harness_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    first = harness.stdout.readline()
    harness.stdout.close()  # as `head -1` does
    assert first.startswith(b"trainspec: ")
    assert harness.wait(timeout=120) == 0
    results = assert_clean(run_dir, tag)
    assert [(s["id"], s["outcome"]) for s in results["specs"]] == [("other", "passed"), ("slow", "passed")]


def test_with_stdout_and_stderr_closed_the_run_goes_on(tmp_path: Path) -> None:
    tag = new_tag()
    project = tmp_path / "project"
    write_spec(project / "specs", "quick", "print('done')", tag)
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "harness", "run", "--fake-gpus", "1", "--run-dir", str(run_dir)]
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" >&- 2>&-', "sh", *argv], cwd=project, env=harness_env(tmp_path), timeout=120
    )
    assert done.returncode == 0
    assert record(assert_clean(run_dir, tag), "quick")["outcome"] == "passed"
    assert json.loads((run_dir / "specs" / "quick" / "result.json").read_text())["outcome"] == "passed"


FAILS_INSIDE = """
import os

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    caller, spec = dict(os.environ), item.spec.env  # shown by -l, as the harness's own frames would show them
    raise RuntimeError(f"failed inside, with {len(caller) + len(spec)} variables in reach")
"""


@pytest.mark.parametrize("devices", [1, 2], ids=["in-process", "xdist"])
def test_an_internal_error_under_pytests_l_prints_no_secret(tmp_path: Path, devices: int) -> None:
    """pytest's `-l` shows each frame's locals, the run's environment among them, when the
    harness itself fails (here: a plugin that fails as the spec runs, holding the caller's and
    the spec's environment; a spec the harness cannot start, as a NUL in its env once was, is
    refused before anything runs); those secrets stay masked in the terminal and in junit.xml."""
    tag = new_tag()
    project = tmp_path / "project"
    write_spec(project / "specs", "leaky", "print('done')", tag, env={"HF_TOKEN": SECRET})
    (project / "fails_inside.py").write_text(FAILS_INSIDE)
    run_dir = tmp_path / "run"
    argv = ["run", "--fake-gpus", str(devices), "--run-dir", str(run_dir), "-p", "fails_inside", "-l", "-vv"]
    outer = "outer-" + SECRET
    env = harness_env(tmp_path)
    env.update(WANDB_API_KEY=outer, PYTHONPATH=os.pathsep.join(filter(None, [str(project), env.get("PYTHONPATH")])))
    done = harness_in(project, env, *argv)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "HF_TOKEN" in output and "***" in output  # the locals were shown, masked
    junit = (run_dir / "junit.xml").read_text()
    assert "HF_TOKEN" in junit
    for secret in (SECRET, outer):
        assert secret not in output and secret not in junit


# devices beyond what the machine holds -----------------------------------------------------


def test_a_huge_fake_device_count_starts_no_more_workers_than_the_ceiling_or_the_specs(tmp_path: Path) -> None:
    """`--fake-gpus 100000` once forked a worker per device: now a fixed ceiling and the specs bound them."""
    tag = new_tag()
    project = tmp_path / "project"
    for name in ("one", "two", "three"):
        write_spec(project / "specs", name, "import os; print(os.environ['OMP_NUM_THREADS'])", tag)
    for index in range(SIMULATED_CEILING + 6):
        write_spec(project / "many", f"m{index}", "pass", tag)
    plans = {
        folder: harness_in(project, harness_env(tmp_path), "plan", "--fake-gpus", "100000", "--specs", folder)
        for folder in ("specs", "many")
    }
    assert all(plan.returncode == 0 for plan in plans.values()), [plan.stderr for plan in plans.values()]
    assert "concurrency: 100000 devices, 3 workers: the specs to run" in plans["specs"].stdout, plans["specs"].stdout
    ceiling = f"concurrency: 100000 devices, {SIMULATED_CEILING} workers: the ceiling of {SIMULATED_CEILING}"
    assert ceiling in plans["many"].stdout, plans["many"].stdout
    expected = 3
    run_dir = tmp_path / "run"
    output = run_harness_expecting(0, tmp_path, "run", "--fake-gpus", "100000", "--run-dir", str(run_dir), timeout=300)
    started = re.search(r"created: (\d+)/\d+ workers", output)
    assert (int(started.group(1)) if started else 1) == expected, output
    results = assert_clean(run_dir, tag)
    assert sorted(s["outcome"] for s in results["specs"]) == ["passed"] * 3
    # each run's share of the cores: one device of 100000 is less than a core, so one thread
    assert {(run_dir / "specs" / s / "stdout.log").read_text().strip() for s in ("one", "two", "three")} == {"1"}
