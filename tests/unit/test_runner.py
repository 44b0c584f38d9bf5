"""harness.process and harness.launch: real commands in their own process group, killed whole on timeout or when
asked."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.backends.local import LocalBackend, cpu_threads
from harness.backends.slurm import SlurmBackend
from harness.checks.after_run import check_exit
from harness.devices.visible import discover
from harness.launch import CHILD_VERSIONS_FILE, Launch, build_argv, build_launch
from harness.process import end_group, run_process
from harness.spec.files import spec_from_mapping

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


def spec(**fields):
    return spec_from_mapping(
        {"id": "run-me", "command": ["{python}", "train.py", "--out", "{output_dir}"], **fields}, Path("s.yaml")
    )


VALUES = {
    "python": "/venv/bin/python",
    "output_dir": "/runs/r1/specs/x",
    "run_dir": "/runs/r1",
    "repo": "/repo",
    "gpus": "2",
}


def test_build_argv_fills_placeholders_and_appends_args():
    argv = build_argv(spec(args={"max_steps": 5, "data": "{repo}/data", "fast": True}), VALUES, 1)
    assert argv == [
        "/venv/bin/python",
        "train.py",
        "--out",
        "/runs/r1/specs/x",
        "--max-steps",
        "5",
        "--data",
        "/repo/data",
        "--fast",
    ]


def test_build_argv_with_torchrun_drops_a_leading_python():
    argv = build_argv(spec(launcher="torchrun", cpu_ok=True, gpus=2), VALUES, 2)
    assert argv == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "train.py",
        "--out",
        "/runs/r1/specs/x",
    ]


def test_build_argv_with_torchrun_keeps_a_script_first():
    argv = build_argv(spec(command="train.py --gpus {gpus}", launcher="torchrun"), VALUES, 3)
    assert argv[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3"]
    assert argv[5:] == ["train.py", "--gpus", "2"]


def base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "CUDA_VISIBLE", "OMP_NUM"))
    }
    return {**env, "HF_HUB_OFFLINE": "caller-value"}


def test_build_launch_environment(tmp_path):
    inventory = discover(fake_gpus=4, environ={})
    the_spec = spec(
        env={"HF_DATASETS_OFFLINE": "0", "CACHE": "{run_dir}/cache", "RANK_HINT": 7, "CUDA_VISIBLE_DEVICES": "9"},
        cpu_ok=True,
        gpus=2,
        cwd="examples/tinylm",
        timeout=42,
    )
    run = build_launch(
        the_spec,
        repo=tmp_path,
        run_dir=tmp_path / "run",
        output_dir=tmp_path / "run" / "specs" / "run-me",
        placement=LocalBackend().place(the_spec, ("1", "3"), inventory),
        base_env=base_env(),
    )
    env = run.env
    assert env["CUDA_VISIBLE_DEVICES"] == "1,3"  # the lease decides, not the spec
    assert env["TRAINSPEC_DEVICE_KIND"] == "fake"
    assert env["HF_HUB_OFFLINE"] == "caller-value"  # the caller's setting is kept
    assert env["HF_DATASETS_OFFLINE"] == "0"  # the spec overrides a default
    assert env["CACHE"] == f"{tmp_path / 'run'}/cache"
    assert env["RANK_HINT"] == "7"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["TRAINSPEC_SPEC_ID"] == "run-me"
    assert env["TRAINSPEC_OUTPUT_DIR"] == str(tmp_path / "run" / "specs" / "run-me")
    cores = len(os.sched_getaffinity(0))
    assert env["OMP_NUM_THREADS"] == str(max(1, cores * 2 // 4))
    assert run.cwd == tmp_path / "examples/tinylm"
    assert run.timeout == 42
    assert run.output_dir == tmp_path / "run" / "specs" / "run-me"
    assert run.argv[0] == sys.executable and run.argv[-1] == str(run.output_dir)


def test_build_launch_on_cpu_hides_every_gpu(tmp_path):
    cpu = discover(gpus=0, environ={})
    run = build_launch(
        spec(gpus=0),
        repo=tmp_path,
        run_dir=tmp_path,
        output_dir=tmp_path / "o",
        placement=LocalBackend().place(spec(gpus=0), ("cpu",), cpu),
        base_env={"CUDA_VISIBLE_DEVICES": "0,1"},
    )
    assert run.env["CUDA_VISIBLE_DEVICES"] == ""
    assert run.env["TRAINSPEC_DEVICE_KIND"] == "cpu"
    assert run.env["OMP_NUM_THREADS"] == str(len(os.sched_getaffinity(0)))


def test_build_argv_across_nodes_leaves_the_rendezvous_to_the_allocation():
    argv = build_argv(
        spec(launcher="torchrun", gpus=4, nodes=2, command="train.py --world {nodes}x{gpus}"),
        {**VALUES, "nodes": "2"},
        4,
    )
    assert argv == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--rdzv-backend=c10d",
        "--nproc-per-node=4",
        "train.py",
        "--world",
        "2x2",
    ]


def test_build_launch_under_slurm_counts_the_devices_the_job_asks_for(tmp_path):
    slurm = SlurmBackend.from_options({}, "")
    the_spec = spec(gpus=4, nodes=2, launcher="torchrun", command="t.py {gpus} {nodes}")
    run = build_launch(
        the_spec,
        repo=tmp_path,
        run_dir=tmp_path,
        output_dir=tmp_path / "o",
        placement=slurm.place(the_spec, (), slurm.inventory({})),
        base_env={"CUDA_VISIBLE_DEVICES": "7", "OMP_NUM_THREADS": "3"},
    )
    assert run.argv[-2:] == ["4", "2"] and (run.gpus, run.nodes) == (4, 2)
    # The job's devices and cores are Slurm's to give: the login node's must not leak in.
    assert "CUDA_VISIBLE_DEVICES" not in run.env and run.env["OMP_NUM_THREADS"] == "3"


def test_build_launch_passes_the_held_devices_to_torchrun(tmp_path):
    inventory = discover(fake_gpus=2, environ={})
    run = build_launch(
        spec(launcher="torchrun", gpus=2, cpu_ok=True),
        repo=tmp_path,
        run_dir=tmp_path,
        output_dir=tmp_path / "o",
        placement=LocalBackend().place(spec(launcher="torchrun", gpus=2, cpu_ok=True), ("0", "1"), inventory),
        base_env={},
    )
    assert "--nproc-per-node=2" in run.argv
    assert run.env["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_cpu_threads_share_the_cores_by_devices_held():
    cores = len(os.sched_getaffinity(0))
    four = discover(fake_gpus=4, environ={})
    assert cpu_threads(1, four) == max(1, cores // 4)
    assert cpu_threads(4, four) == cores
    assert cpu_threads(0, discover(gpus=0, environ={})) == cores


def test_a_launched_run_writes_no_bytecode_into_the_tree(tmp_path):
    def tree(name: str) -> Path:
        repo = tmp_path / name
        repo.mkdir()
        (repo / "helper.py").write_text("VALUE = 1\n")
        return repo

    # Without the harness's environment, importing the project's module writes bytecode beside it...
    plain = tree("plain")
    subprocess.run([sys.executable, "-c", "import helper"], cwd=plain, env=base_env(), check=True)
    assert list(plain.rglob("*.pyc")), "the check below would prove nothing"
    # ...with it, nothing lands in the project's tree.
    repo = tree("repo")
    the_spec = spec(command=["{python}", "-c", "import helper; print(helper.VALUE)"], gpus=0)
    run = build_launch(
        the_spec,
        repo=repo,
        run_dir=tmp_path / "run",
        output_dir=tmp_path / "run" / "out",
        placement=LocalBackend().place(the_spec, ("cpu",), discover(gpus=0, environ={})),
        base_env=base_env(),
    )
    assert run_process(run).exit_code == 0
    assert run.stdout_path.read_text() == "1\n"
    assert sorted(p.name for p in repo.rglob("*")) == ["helper.py"]


def test_children_record_the_library_versions_they_import(tmp_path):
    """harness/child_site is first on every child's PYTHONPATH: at exit it writes what was imported,
    and the sitecustomize it shadows still runs."""
    libraries = tmp_path / "libs"
    libraries.mkdir()
    (libraries / "transformers.py").write_text("__version__ = '9.9.9'\n")
    (libraries / "sitecustomize.py").write_text("import os\nopen(os.environ['SHADOWED_MARK'], 'w').close()\n")
    out = tmp_path / "out"
    out.mkdir()
    spec = spec_from_mapping(
        {
            "id": "versions",
            "command": ["{python}", "-c", "import transformers"],
            "gpus": 0,
            "env": {"PYTHONPATH": str(libraries), "SHADOWED_MARK": str(tmp_path / "mark")},
        },
        tmp_path / "spec.yaml",
    )
    launch = build_launch(
        spec,
        repo=tmp_path,
        run_dir=tmp_path,
        output_dir=out,
        placement=LocalBackend().place(spec, (), discover(gpus=0, environ={})),
    )
    assert run_process(launch).exit_code == 0
    versions = json.loads((out / CHILD_VERSIONS_FILE).read_text())
    assert versions == {"python": platform.python_version(), "torch": None, "transformers": "9.9.9", "cuda": None}
    assert (tmp_path / "mark").exists()


def test_a_child_that_imports_neither_library_records_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    spec = spec_from_mapping(
        {"id": "plain", "command": ["{python}", "-c", "import json"], "gpus": 0}, tmp_path / "spec.yaml"
    )
    launch = build_launch(
        spec,
        repo=tmp_path,
        run_dir=tmp_path,
        output_dir=out,
        placement=LocalBackend().place(spec, (), discover(gpus=0, environ={})),
    )
    assert run_process(launch).exit_code == 0
    assert not (out / CHILD_VERSIONS_FILE).exists()
