"""The per-node rendezvous of a multi-node Slurm job, with scontrol stood in for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.backends import rendezvous
from harness.backends.rendezvous import RendezvousError, head_address, rendezvous_environment

NODE_LINE = "NodeName=gpu-a17 Arch=x86_64 CoresPerSocket=8 NodeAddr={addr} NodeHostName=gpu-a17 Version=22.05.8"


def scontrol(hosts: str, addr: str | None = None, code: int = 0):
    calls: list[list[str]] = []

    def run(argv, **kwargs):
        calls.append(argv)
        if argv[1] == "show" and argv[2] == "hostnames":
            return subprocess.CompletedProcess(argv, code, stdout=hosts, stderr="" if code == 0 else "Invalid hostlist")
        return subprocess.CompletedProcess(argv, 0, stdout=NODE_LINE.format(addr=addr) if addr else "", stderr="")

    return run, calls


def test_the_head_is_the_first_node_at_its_own_address():
    run, calls = scontrol("gpu-a17\ngpu-a18\n", addr="10.0.3.17")
    assert head_address("gpu-a[17-18]", run) == "10.0.3.17"
    assert calls == [["scontrol", "show", "hostnames", "gpu-a[17-18]"], ["scontrol", "-o", "show", "node", "gpu-a17"]]


def test_a_node_without_an_address_is_reached_by_its_name():
    run, _ = scontrol("gpu-a17\n")
    assert head_address("gpu-a17", run) == "gpu-a17"


def test_an_unreadable_node_list_is_an_error():
    run, _ = scontrol("", code=1)
    with pytest.raises(RendezvousError, match=r"show hostnames bad\[` gave no host: Invalid hostlist"):
        head_address("bad[", run)


def test_every_node_computes_the_same_endpoint_and_only_the_first_hosts_it():
    first = rendezvous_environment({"SLURM_JOB_ID": "123457", "SLURM_NODEID": "0"}, "10.0.3.17")
    second = rendezvous_environment({"SLURM_JOB_ID": "123457", "SLURM_NODEID": "1"}, "10.0.3.17")
    assert first["PET_RDZV_ENDPOINT"] == second["PET_RDZV_ENDPOINT"] == "10.0.3.17:23457"
    assert first["PET_RDZV_ID"] == second["PET_RDZV_ID"] == "slurm-123457"
    assert (first["PET_RDZV_CONF"], second["PET_RDZV_CONF"]) == ("is_host=1", "is_host=0")
    assert (
        rendezvous_environment({"SLURM_JOB_ID": "9", "SLURM_NODEID": "0"}, "fd00::17")["PET_RDZV_ENDPOINT"]
        == "[fd00::17]:20009"
    )


def test_outside_a_job_it_says_so_and_runs_nothing(tmp_path: Path):
    marker = tmp_path / "ran"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    done = subprocess.run(
        [sys.executable, rendezvous.__file__, "touch", str(marker)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "not inside a Slurm job step: SLURM_JOB_ID, SLURM_NODEID, SLURM_JOB_NODELIST unset" in done.stderr
    assert not marker.exists()


def test_a_command_that_cannot_run_is_named(tmp_path: Path):
    env = {**job_environment(tmp_path), "SLURM_NODEID": "0"}
    done = subprocess.run(
        [sys.executable, rendezvous.__file__, "trainspec-no-such-launcher"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 127
    assert done.stderr.startswith(
        "trainspec rendezvous: cannot run trainspec-no-such-launcher: No such file or directory"
    )


def job_environment(tmp_path: Path) -> dict[str, str]:
    """A job step's environment, with a stand-in scontrol that knows node7 at 127.0.0.7."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "scontrol").write_text(
        f"#!{sys.executable}\nimport sys\nprint('node7' if sys.argv[2] == 'hostnames' else 'NodeName=node7 "
        "NodeAddr=127.0.0.7 State=IDLE')\n"
    )
    (bin_dir / "scontrol").chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": "41",
        "SLURM_NODEID": "1",
        "SLURM_JOB_NODELIST": "node[7-8]",
    }


def test_inside_a_job_it_becomes_the_command_with_the_rendezvous_set(tmp_path: Path):
    env = job_environment(tmp_path)
    show = "import os; print(os.getpid(), os.environ['PET_RDZV_ENDPOINT'], os.environ['PET_RDZV_CONF'])"
    done = subprocess.Popen(
        [sys.executable, rendezvous.__file__, sys.executable, "-c", show], env=env, stdout=subprocess.PIPE, text=True
    )
    pid, endpoint, conf = done.communicate(timeout=30)[0].split()
    # exec, not a child: signals from srun reach torchrun itself.
    assert (int(pid), endpoint, conf) == (done.pid, "127.0.0.7:20041", "is_host=0")
