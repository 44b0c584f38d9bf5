"""The Slurm backend against stand-in Slurm commands: what srun is asked for, how endings are read."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from harness.backends import slurm
from harness.backends.slurm import SlurmBackend, SlurmOptions, ending, srun_argv, time_limit
from harness.checks.after_run import check_exit
from harness.launch import Launch

# Stand-ins: srun logs its argv, then runs the command after its options; scontrol prints the
# job records a test left in SCONTROL_RECORD (the one asked for by id); squeue lists the ids
# of those records with the name asked for, else QUEUE; scancel logs its argv.
STAND_INS = {
    "srun": """
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["SLURM_LOG"], "a") as log:
    log.write(json.dumps(["srun", *args]) + "\\n")
while args and args[0].startswith("--"):
    args.pop(0)
sys.exit(subprocess.call(args))
""",
    "scontrol": """
import os, sys
if sys.argv[1:] == ["ping"]:
    print("Slurmctld(primary) at head is UP")
elif os.path.exists(os.environ["SCONTROL_RECORD"]):
    print("\\n".join(line for line in open(os.environ["SCONTROL_RECORD"]) if line.startswith(f"JobId={sys.argv[-1]} ")))
""",
    "squeue": """
import os, re, sys
names = [arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith("--name=")]
if names and os.path.exists(os.environ["SCONTROL_RECORD"]):
    jobs = (re.match(r"JobId=(\\d+) JobName=(\\S+)", line) for line in open(os.environ["SCONTROL_RECORD"]))
    print("\\n".join(m.group(1) for m in jobs if m and m.group(2) == names[0]))
else:
    print(os.environ.get("QUEUE", ""))
""",
    "scancel": """
import json, os, sys
with open(os.environ["SLURM_LOG"], "a") as log:
    log.write(json.dumps(["scancel", *sys.argv[1:]]) + "\\n")
""",
}


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STAND_INS.items():
        (bin_dir / name).write_text(f"#!{sys.executable}\n{body}")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_LOG", str(tmp_path / "slurm.log"))
    monkeypatch.setenv("SCONTROL_RECORD", str(tmp_path / "record.txt"))
    return tmp_path


def calls(cluster: Path) -> list[list[str]]:
    return [json.loads(line) for line in (cluster / "slurm.log").read_text().splitlines()]


def launch(tmp_path: Path, argv: list[str], gpus: int = 1, timeout: float = 90, nodes: int = 1) -> Launch:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return Launch(argv, tmp_path, dict(os.environ), out, timeout, "tiny", gpus, nodes)


def test_srun_asks_for_the_spec_devices_time_and_place(tmp_path):
    argv = srun_argv(
        launch(tmp_path, ["python", "train.py"], gpus=2, timeout=90), SlurmOptions("gpu", ("--account=ml",), "abc")
    )
    assert argv == [
        "srun",
        "--job-name=trainspec-abc-tiny",
        "--quiet",
        "--nodes=1",
        "--ntasks-per-node=1",
        "--time=2",
        f"--chdir={tmp_path}",
        "--export=ALL",
        "--gres=gpu:2",
        "--partition=gpu",
        "--account=ml",
        "python",
        "train.py",
    ]
    assert "--gres" not in " ".join(srun_argv(launch(tmp_path, ["true"], gpus=0), SlurmOptions()))


def test_a_multi_node_job_runs_one_rendezvous_wrapped_task_per_node(tmp_path):
    argv = srun_argv(
        launch(tmp_path, ["torchrun-here", "train.py"], gpus=4, nodes=3), SlurmOptions(extra=("--kill-on-bad-exit=0",))
    )
    assert "--nodes=3" in argv and "--ntasks-per-node=1" in argv and "--gres=gpu:4" in argv
    # The caller's own srun options come last among srun's, so they win over the harness's.
    assert argv.index("--kill-on-bad-exit=1") < argv.index("--kill-on-bad-exit=0")
    assert argv[-4:] == [sys.executable, str(slurm.RENDEZVOUS), "torchrun-here", "train.py"]
    assert str(slurm.RENDEZVOUS) not in srun_argv(launch(tmp_path, ["train.py"]), SlurmOptions())


def test_time_limits_round_up_to_whole_minutes():
    assert [time_limit(s) for s in (1, 60, 61, 3600)] == ["1", "1", "2", "60"]


def test_a_job_runs_through_srun_and_is_cancelled_by_name_afterwards(cluster):
    outcome = SlurmBackend(SlurmOptions(run_tag="r1")).run(launch(cluster, [sys.executable, "-c", "print('trained')"]))
    assert outcome.exit_code == 0 and outcome.scheduler_reason is None
    assert (cluster / "out" / "stdout.log").read_text() == "trained\n"
    srun_call, scancel_call = calls(cluster)
    assert srun_call[:2] == ["srun", "--job-name=trainspec-r1-tiny"] and "--gres=gpu:1" in srun_call
    assert scancel_call == ["scancel", "--name=trainspec-r1-tiny"]


def test_a_job_slurm_ended_says_so(cluster):
    (cluster / "record.txt").write_text(
        "JobId=7 JobName=other JobState=COMPLETED Reason=None\n"
        "JobId=9 JobName=trainspec-r1-tiny UserId=me(0) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) "
        "TimeLimit=00:01:00 NodeList=gpu-a[17-18]\n"
    )
    outcome = SlurmBackend(SlurmOptions(run_tag="r1")).run(
        launch(cluster, [sys.executable, "-c", "raise SystemExit(143)"])
    )
    assert outcome.exit_code == 143
    assert outcome.describe() == "Slurm ended job 9 as TIMEOUT, reason TimeLimit, time limit 00:01:00"
    assert outcome.placement == "Slurm job 9 on gpu-a[17-18]"


def test_a_node_failure_fails_the_spec_though_srun_exits_0(cluster):
    (cluster / "record.txt").write_text(
        "JobId=4 JobName=trainspec-r1-tiny JobState=NODE_FAIL Reason=NodeDown NodeList=node2\n"
    )
    outcome = SlurmBackend(SlurmOptions(run_tag="r1")).run(launch(cluster, [sys.executable, "-c", "pass"]))
    exit_check = check_exit(outcome)
    assert outcome.exit_code == 0 and not exit_check.passed
    assert exit_check.found == "Slurm ended job 4 as NODE_FAIL, reason NodeDown"


def test_a_job_that_never_left_the_queue_was_never_placed():
    assert (
        slurm.placement({"JobId": "4", "JobState": "CANCELLED", "NodeList": "(null)"}) == "Slurm job 4 (never placed)"
    )
    assert slurm.placement(None) == ""


def test_a_failing_command_is_not_blamed_on_slurm():
    assert ending({"JobId": "3", "JobState": "FAILED", "Reason": "NonZeroExitCode"}) is None
    assert ending(None) is None
    assert ending({"JobId": "4", "JobState": "CANCELLED", "Reason": "None"}) == "Slurm ended job 4 as CANCELLED"


def test_cancel_run_cancels_only_this_runs_jobs(cluster, monkeypatch):
    monkeypatch.setenv("QUEUE", "11 trainspec-r1-a\n12 someone-else\n13 trainspec-r1-b\n14 trainspec-r2-a")
    assert slurm.cancel_run("r1") == ["11", "13"]
    assert calls(cluster) == [["scancel", "11", "13"]]


def test_check_available_names_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(slurm.SlurmError, match="missing: srun, scontrol, squeue, scancel"):
        slurm.check_available()


def test_a_job_still_completing_is_asked_again_until_it_settles(cluster, monkeypatch):
    answers = iter(
        [
            {"JobId": "5", "JobState": "COMPLETING"},
            {"JobId": "5", "JobState": "COMPLETING"},
            {"JobId": "5", "JobState": "TIMEOUT", "Reason": "TimeLimit"},
        ]
    )
    monkeypatch.setattr(slurm, "job_record", lambda name: next(answers))
    monkeypatch.setattr(slurm.time, "sleep", lambda seconds: None)
    assert slurm.settled_record("trainspec-r1-tiny", 10.0) == {
        "JobId": "5",
        "JobState": "TIMEOUT",
        "Reason": "TimeLimit",
    }
