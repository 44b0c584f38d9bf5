"""The fault suite, continued: signals and processes, the machine-wide lease pool, disks, the
environment and the repository, as a careful attacker or an unlucky user meets them.

Each case runs the real harness on real processes, then checks that nothing of the run is
left (by a tag in every command line), that results.json is written and names the cause,
and that the output holds no traceback. docs/faults.md lists every case.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.records import load_results

from ..conftest import tagged
from .common import (
    cpu_spec,
    git_project,
    harness_env,
    harness_in,
    kill_tagged,
    machine,
    new_tag,
    no_traceback,
    record,
    run_harness_expecting,
    start,
    stop,
    wait_until,
    write_spec,
)

pytestmark = pytest.mark.e2e

IGNORES_SIGNALS = (
    "import signal, time\n"
    "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
    "    signal.signal(s, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(300)\n"
)


# signals and processes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "to_group"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGTERM, True)],
    ids=["sigint-harness-pid-only", "sigterm-harness-pid-only", "sigterm-group"],
)
def test_cpu_runs_that_ignore_every_signal_are_ended_when_the_harness_is_interrupted(
    tmp_path: Path, signum: signal.Signals, to_group: bool
) -> None:
    """Two `gpus: 0` specs under xdist whose children ignore TERM, INT and HUP: once the harness has
    exited (130, results.json written), neither is running."""
    tag = new_tag()
    project = tmp_path / "project"
    for name in ("deaf_one", "deaf_two"):
        cpu_spec(project / "specs", name, IGNORES_SIGNALS, tag, timeout=200)
    run_dir = tmp_path / "run"
    harness = start(project, tmp_path, "--fake-gpus", "2", "--run-dir", str(run_dir))
    try:
        wait_until(lambda: len(tagged(tag)) == 2, harness)
        (os.killpg if to_group else os.kill)(harness.pid, signum)
        output = harness.communicate(timeout=120)[0]
        assert harness.returncode == 130, output
        assert tagged(tag) == []
        results = load_results(run_dir)
        assert results["interrupted"] is True
        assert {record(results, name)["outcome"] for name in ("deaf_one", "deaf_two")} == {"error"}
    finally:
        stop(tag, harness)


def test_a_spec_that_sigterms_its_own_worker_crashes_alone(tmp_path: Path) -> None:
    """`kill $PPID` from a run under xdist: that spec is a crash, the specs after it run and are recorded."""
    tag = new_tag()
    project = tmp_path / "project"
    kills = "import os, signal, time; os.kill(os.getppid(), signal.SIGTERM); time.sleep(60)"
    cpu_spec(project / "specs", "kills_its_worker", kills, tag, timeout=300)
    for name, timeout in (("second", 200), ("third", 100), ("fourth", 90)):
        cpu_spec(project / "specs", name, "import time; time.sleep(1); print('done')", tag, timeout=timeout)
    run_dir = tmp_path / "run"
    run_harness_expecting(1, tmp_path, "run", "--fake-gpus", "2", "--run-dir", str(run_dir), timeout=300)
    assert tagged(tag) == []
    results = load_results(run_dir)
    assert results["interrupted"] is False
    crashed = record(results, "kills_its_worker")
    assert crashed["outcome"] == "error" and crashed["reason"].startswith(
        "crashed: its harness worker got SIGTERM from outside the harness"
    ), crashed
    assert [record(results, name)["outcome"] for name in ("second", "third", "fourth")] == ["passed"] * 3


@pytest.mark.parametrize(
    ("script", "said"),
    [
        ('sh -c "sleep 300; echo {tag}" &\nwait\n', "nvidia-smi did not answer within 20 s"),
        (
            "printf '\\377\\376'; head -c 2048 /dev/urandom\n",
            "nvidia-smi printed something that is not text: b",  # repr quotes with " when the bytes hold a '
        ),
    ],
    ids=["a-wrapper-whose-child-hangs", "random-bytes"],
)
def test_an_nvidia_smi_that_hangs_in_a_child_or_prints_random_bytes(tmp_path: Path, script: str, said: str) -> None:
    """Exit 2 with one line quoting the tool; a hung wrapper's child is killed with it (its whole group)."""
    tag = new_tag()
    env = machine(tmp_path)
    (tmp_path / "tools" / "nvidia-smi").write_text("#!/bin/sh\n" + script.format(tag=tag))
    cpu_spec(tmp_path / "project" / "specs", "quick", "print('done')", tag)
    output = run_harness_expecting(2, tmp_path, "run", "--run-dir", str(tmp_path / "run"), env=env)
    assert [line for line in output.splitlines() if said in line], output
    time.sleep(0.5)
    assert tagged(tag) == []


# Attempts 1 to 3 fail as the machine does (retried by default), the fourth hangs until it is interrupted.
FAILS_THREE_TIMES = """
import os, sys, time
n = len(os.listdir(sys.argv[3]))
open(os.path.join(sys.argv[3], str(n)), "w").close()
if n < 3:
    sys.exit("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
time.sleep(300)
"""


def test_sigint_after_three_failed_attempts_keeps_them_in_the_record(tmp_path: Path) -> None:
    tag = new_tag()
    counter = tmp_path / "attempts-started"
    counter.mkdir()
    project = tmp_path / "project"
    cpu_spec(project / "specs", "retried", FAILS_THREE_TIMES, tag, str(counter), retries=5, timeout=400)
    run_dir = tmp_path / "run"
    harness = start(project, tmp_path, "--fake-gpus", "1", "--run-dir", str(run_dir))
    try:
        wait_until(lambda: len(os.listdir(counter)) == 4 and bool(tagged(tag)), harness)
        os.killpg(harness.pid, signal.SIGINT)
        output = harness.communicate(timeout=120)[0]
        assert harness.returncode == 130, output
        assert tagged(tag) == []
        retried = record(load_results(run_dir), "retried")
        assert [(a["attempt"], a["outcome"]) for a in retried["attempts"]] == [
            (1, "failed"),
            (2, "failed"),
            (3, "failed"),
            (4, "error"),
        ], retried
        assert retried["attempts"][3]["reason"].startswith("interrupted: ")
        assert all(Path(a["output_dir"], "stderr.log").exists() for a in retried["attempts"][:3])
        assert (
            json.loads((run_dir / "specs" / "retried" / "result.json").read_text())["attempts"] == retried["attempts"]
        )
    finally:
        stop(tag, harness)


# leases (the machine-wide pool) ------------------------------------------------------------

# Notes the devices it was given, then ignores SIGTERM (the parent-death signal of a killed harness)
# and computes until the file it is told of appears.
HOLDS_A_GPU = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[3], "a") as trace:
    trace.write(sys.argv[4] + " " + os.environ["CUDA_VISIBLE_DEVICES"] + " " + str(time.time()) + "\\n")
while not os.path.exists(sys.argv[5]):
    time.sleep(0.05)
"""


def gpu_machine(tmp_path: Path) -> dict[str, str]:
    """Two stand-in H100s and a machine-wide lease folder of the test's own."""
    return {**machine(tmp_path, nvidia={}), "TRAINSPEC_LEASE_DIR": str(tmp_path / "leases")}


def gpu_spec(project: Path, spec_id: str, tag: str, trace: Path, until: Path) -> None:
    write_spec(project / "specs", spec_id, HOLDS_A_GPU, tag, str(trace), spec_id, str(until), timeout=300, cpu_ok=None)


def started(trace: Path) -> dict[str, tuple[str, float]]:
    lines = trace.read_text().splitlines() if trace.exists() else []
    return {name: (device, float(at)) for name, device, at in (line.split() for line in lines)}


def waiting(state: Path) -> list[str]:
    """The specs queued for a device in the pool's state file."""
    try:
        return [w["name"] for w in json.loads(state.read_text())["queue"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def test_a_lease_outlives_a_harness_killed_while_its_run_lives(tmp_path: Path) -> None:
    """`kill -9` the harness while its run ignores SIGTERM: a second run waits for GPU 0 until that run ends."""
    tag, env, trace = new_tag(), gpu_machine(tmp_path), tmp_path / "trace"
    gpu_spec(tmp_path / "first", "first", tag, trace, tmp_path / "never")
    gpu_spec(tmp_path / "second", "second", tag, trace, tmp_path / "second-may-end")
    (tmp_path / "second-may-end").touch()
    first = start(tmp_path / "first", tmp_path, "--gpus", "1", "--run-dir", str(tmp_path / "run1"), env=env)
    second = None
    try:
        wait_until(lambda: "first" in started(trace), first)
        first.kill()
        first.communicate()
        second = start(tmp_path / "second", tmp_path, "--gpus", "1", "--run-dir", str(tmp_path / "run2"), env=env)
        wait_until(lambda: "second" in waiting(tmp_path / "leases" / "devices.json"), second)
        time.sleep(3)
        assert "second" not in started(trace), "the second run was given the GPU the first run's process still uses"
        ended = time.time()
        kill_tagged(tag)  # the first run's process ends: its lease with it
        output = second.communicate(timeout=120)[0]
        assert second.returncode == 0, output
        assert started(trace)["second"][1] >= ended
        assert record(load_results(tmp_path / "run2"), "second")["lease_wait"] >= 3
    finally:
        stop(tag, first, second)


@pytest.mark.parametrize("damage", ["deleted", "garbage"])
def test_a_lease_state_deleted_or_garbled_mid_run_never_double_books(tmp_path: Path, damage: str) -> None:
    """The holders' own files are the truth: the second run waits for GPU 0 until the first gives it back."""
    tag, env, trace = new_tag(), gpu_machine(tmp_path), tmp_path / "trace"
    release = tmp_path / "first-may-end"
    gpu_spec(tmp_path / "first", "first", tag, trace, release)
    gpu_spec(tmp_path / "second", "second", tag, trace, release)
    first = start(tmp_path / "first", tmp_path, "--gpus", "1", "--run-dir", str(tmp_path / "run1"), env=env)
    second = None
    try:
        wait_until(lambda: "first" in started(trace), first)
        state = tmp_path / "leases" / "devices.json"
        if damage == "deleted":
            state.unlink()
        else:
            state.write_bytes(b"\x00\xffnot a lease state")
        second = start(tmp_path / "second", tmp_path, "--gpus", "1", "--run-dir", str(tmp_path / "run2"), env=env)
        wait_until(lambda: "second" in waiting(state), second)
        time.sleep(3)
        assert "second" not in started(trace), "a device still held was handed to a second run"
        ended = time.time()
        release.touch()
        outputs = [proc.communicate(timeout=120)[0] for proc in (first, second)]
        assert (first.returncode, second.returncode) == (0, 0), outputs
        no_traceback(outputs[1])
        assert started(trace)["second"][1] >= ended
    finally:
        stop(tag, first, second)


def test_a_lease_state_made_immutable_mid_run_keeps_a_passed_spec_passed(tmp_path: Path) -> None:
    """`chattr +i` on the state file while a spec runs: it still passes; the next spec cannot lease and fails
    as the machine's (`infra`), saying why in one line; results.json is written."""
    tag = new_tag()
    project = tmp_path / "project"
    flag = tmp_path / "first-may-end"
    waits = "import os, sys, time\nwhile not os.path.exists(sys.argv[3]): time.sleep(0.05)"
    write_spec(project / "specs", "first", waits, tag, str(flag), timeout=300)
    write_spec(project / "specs", "second", "print('done')", tag, timeout=200)
    run_dir = tmp_path / "run"
    harness = start(project, tmp_path, "--fake-gpus", "1", "--run-dir", str(run_dir))
    state = run_dir / "leases.json"
    try:
        wait_until(lambda: bool(tagged(tag)), harness)
        if subprocess.run(["chattr", "+i", str(state)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i needs root and a file system that supports it")
        flag.touch()
        output = harness.communicate(timeout=120)[0]
        assert harness.returncode == 1, output
        no_traceback(output)
        results = load_results(run_dir)
        assert record(results, "first")["outcome"] == "passed"
        second = record(results, "second")
        assert (second["outcome"], second["failure_kind"], second["reason"]) == (
            "failed",
            "infra",
            f"{state}: cannot write the device lease state (Operation not permitted)",
        ), second
        assert tagged(tag) == []
    finally:
        subprocess.run(["chattr", "-i", str(state)], capture_output=True)
        stop(tag, harness)


@pytest.mark.parametrize(
    ("where", "said"),
    [("file", "is a file; point TRAINSPEC_LEASE_DIR at a folder"), ("/proc/trainspec", "is not writable: ")],
    ids=["a-file", "not-writable"],
)
def test_a_lease_folder_that_is_a_file_or_not_writable_is_exit_2_in_one_line(
    tmp_path: Path, where: str, said: str
) -> None:
    (tmp_path / "file").write_text("not a folder")
    lease_dir = where if where.startswith("/") else str(tmp_path / where)
    env = {**gpu_machine(tmp_path), "TRAINSPEC_LEASE_DIR": lease_dir}
    tag = new_tag()
    gpu_spec(tmp_path / "project", "on_a_gpu", tag, tmp_path / "trace", tmp_path / "never")
    output = run_harness_expecting(2, tmp_path, "run", "--gpus", "1", "--run-dir", str(tmp_path / "run"), env=env)
    assert len([line for line in output.splitlines() if f"the device lease folder {lease_dir} {said}" in line]) == 1
    assert tagged(tag) == []


# disks, environment, repository ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "huge"])
def test_a_baseline_that_is_not_a_regular_file_of_a_sane_size_is_exit_2_at_once(tmp_path: Path, kind: str) -> None:
    """`--baseline /dev/zero` once read until memory ran out; a FIFO blocked: only regular files of a
    sane size are read."""
    if kind == "dev-zero":
        baseline, said = "/dev/zero", "--baseline /dev/zero is not a regular file (a device)"
    elif kind == "fifo":
        baseline = str(tmp_path / "fifo")
        os.mkfifo(baseline)
        said = f"--baseline {baseline} is not a regular file (a FIFO)"
    else:
        baseline = str(tmp_path / "huge.json")
        with open(baseline, "wb") as file:
            file.truncate(300 << 20)  # sparse: no disk used
        said = f"--baseline {baseline} is larger than 256 MiB, more than any record of a run"
    tag = new_tag()
    cpu_spec(tmp_path / "project" / "specs", "quick", "print('done')", tag)
    args = ["run", "--fake-gpus", "1", "--run-dir"]
    run_harness_expecting(0, tmp_path, *args, str(tmp_path / "run"), timeout=60)  # the same run without the baseline
    output = run_harness_expecting(2, tmp_path, *args, str(tmp_path / "run2"), "--baseline", baseline, timeout=60)
    assert len([line for line in output.splitlines() if said in line]) == 1, output
    report = harness_in(tmp_path, harness_env(tmp_path), "report", baseline, timeout=60)
    assert report.returncode == 2 and said.removeprefix("--baseline ") in report.stderr, report.stderr


PLANTS_A_HOOK = (
    "import os, stat\n"
    "hook = os.path.join('.git', 'hooks', 'post-checkout')\n"
    "open(hook, 'w').write('#!/bin/sh\\necho owned\\n')\n"
    "os.chmod(hook, 0o755)\n"
    "open(os.path.join('.git', 'config'), 'a').write('[alias]\\n\\tst = status\\n')\n"
    "open(os.path.join('.git', 'info', 'exclude'), 'a').write('secret-output/\\n')\n"
)


def test_writes_into_the_git_folder_are_repository_writes_and_are_named(tmp_path: Path) -> None:
    """A spec that installs a hook (the user's next checkout runs it), edits `.git/config` or `info/exclude`."""
    project = git_project(tmp_path / "project", PLANTS_A_HOOK)
    done = harness_in(project, harness_env(tmp_path), "run", "--run-dir", str(tmp_path / "run"))
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    written = [".git/config", ".git/hooks/post-checkout", ".git/info/exclude"]
    assert load_results(tmp_path / "run")["repo_writes"] == written
    assert f"the run wrote into the repository: {', '.join(written)}" in done.stdout
    clean = git_project(tmp_path / "clean", "print('nothing written')")
    again = harness_in(clean, harness_env(tmp_path), "run", "--run-dir", str(tmp_path / "run-clean"))
    assert again.returncode == 0 and load_results(tmp_path / "run-clean")["repo_writes"] == [], again.stdout


@pytest.mark.parametrize("devices", [1, 2], ids=["in-process", "xdist"])
def test_the_harness_working_folder_deleted_mid_run(tmp_path: Path, devices: int) -> None:
    """The folder the harness was started in (the project) is removed by the last spec once the other one
    has finished: both pass, and results.json, the report and junit.xml are written."""
    tag = new_tag()
    project, done_flag = tmp_path / "project", tmp_path / "other-done"
    removes = (
        "import os, shutil, sys, time\n"
        f"while not os.path.exists({str(done_flag)!r}): time.sleep(0.05)\n"
        f"shutil.rmtree({str(project)!r})\n"
    )
    # Planned last (a shorter timeout is a shorter expected run), and waits for the other besides.
    cpu_spec(project / "specs", "removes_the_start_folder", removes, tag, timeout=100)
    other = f"open({str(done_flag)!r}, 'w').close()"
    cpu_spec(project / "specs", "other", other, tag, timeout=200)
    run_dir = tmp_path / "run"
    run_harness_expecting(0, tmp_path, "run", "--fake-gpus", str(devices), "--run-dir", str(run_dir), timeout=300)
    assert not project.exists()
    results = load_results(run_dir)
    assert [(s["id"], s["outcome"]) for s in results["specs"]] == [
        ("other", "passed"),
        ("removes_the_start_folder", "passed"),
    ]
    assert (run_dir / "junit.xml").exists() and (run_dir / "report.html").exists()


@pytest.fixture
def small_disk(tmp_path: Path):
    """An 8 MiB file system of its own (tmpfs, mounted as root); skipped where it cannot be mounted."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_spec_that_fills_the_run_directorys_disk_fails_as_the_machines_and_the_records_are_written(
    tmp_path: Path, small_disk: Path
) -> None:
    tag = new_tag()
    project = tmp_path / "project"
    fills = "import sys; open(sys.argv[2] + '/big', 'wb').write(b'x' * (16 << 20))"
    write_spec(project / "specs", "fills_the_disk", fills, tag, timeout=300)
    write_spec(project / "specs", "second", "print('done')", tag, timeout=200)
    run_dir = small_disk / "run"
    run_harness_expecting(1, tmp_path, "run", "--fake-gpus", "1", "--run-dir", str(run_dir), timeout=300)
    assert tagged(tag) == []
    results = load_results(run_dir)
    filled = record(results, "fills_the_disk")
    assert (filled["outcome"], filled["failure_kind"]) == ("failed", "infra"), filled
    assert "No space left on device" in filled["failure_evidence"]
    second = record(results, "second")
    assert (second["outcome"], second["failure_kind"]) == ("failed", "infra"), second
    assert "No space left on device" in second["reason"]
    assert (run_dir / "report.html").exists() and (run_dir / "junit.xml").exists()
