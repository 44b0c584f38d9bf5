"""Runs as Slurm jobs: each spec is one `srun` started by a harness worker.

Slurm places the job and sets its `CUDA_VISIBLE_DEVICES`; the harness asks for the spec's
devices (`--gres=gpu:k`), a time limit from its timeout (`--time`, which backfill needs),
and runs the same command, in place, with the same environment. srun forwards the job's
output into the spec's stdout and stderr files and exits with the job, so the checks,
results and reports are the local backend's. Nothing here polls `sacct` (clusters without
accounting have none): why a job ended comes from `scontrol show job`, which keeps
finished jobs for `MinJobAge` seconds.

Every job of a run is named `trainspec-<run tag>-<spec id>`, so the run can cancel all of
them at once (Ctrl-C, a killed worker) without touching anyone else's.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from harness.backends.base import BackendError
from harness.devices.visible import Inventory
from harness.launch import Launch, Placement
from harness.options import Option
from harness.process import ProcessOutcome, Watcher, run_process
from harness.spec.model import Spec

# Job states that mean Slurm, not the command, ended the job.
SCHEDULER_ENDINGS = {
    "TIMEOUT",
    "CANCELLED",
    "PREEMPTED",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
    "REVOKED",
}
COMMAND_SECONDS = 30
UNSETTLED = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"}
SETTLE_SECONDS = 15.0
RENDEZVOUS = Path(__file__).with_name("rendezvous.py")


# Every spec waits in its own srun, so as many workers as specs keep them all in the queue, up to this.
MAX_WORKERS = 32


class SlurmError(Exception):
    """Slurm's commands are missing or refuse the request; the message says which and why."""


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    extra: tuple[str, ...] = ()
    run_tag: str = ""


def job_name(run_tag: str, spec_id: str) -> str:
    return f"trainspec-{run_tag}-{spec_id}"


def time_limit(seconds: float) -> str:
    """`--time` in whole minutes, rounded up: Slurm counts limits in minutes."""
    return str(max(1, math.ceil(seconds / 60)))


def srun_argv(launch: Launch, options: SlurmOptions) -> list[str]:
    """srun in front of the launch's command: one task on each node, each node with the spec's devices."""
    argv = [
        "srun",
        f"--job-name={job_name(options.run_tag, launch.spec_id)}",
        "--quiet",
        f"--nodes={launch.nodes}",
        "--ntasks-per-node=1",
        f"--time={time_limit(launch.timeout)}",
        f"--chdir={launch.cwd}",
        "--export=ALL",
    ]
    if launch.gpus:
        argv.append(f"--gres=gpu:{launch.gpus}")
    if options.partition:
        argv.append(f"--partition={options.partition}")
    command = launch.argv
    if launch.nodes > 1:
        # A node whose torchrun fails ends the job, rather than the others waiting on it
        # until their rendezvous times out; each node's torchrun learns the rendezvous first.
        argv.append("--kill-on-bad-exit=1")
        command = [sys.executable, str(RENDEZVOUS), *command]
    return argv + list(options.extra) + command


def check_available() -> None:
    """Fail before anything runs when this machine cannot talk to a Slurm cluster."""
    missing = [tool for tool in ("srun", "scontrol", "squeue", "scancel") if shutil.which(tool) is None]
    if missing:
        raise SlurmError(f"--backend slurm needs Slurm's client commands on PATH; missing: {', '.join(missing)}")
    probe = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=COMMAND_SECONDS)
    if probe.returncode != 0 or "UP" not in probe.stdout:
        said = (probe.stdout + probe.stderr).strip().splitlines()
        raise SlurmError(
            "slurmctld does not answer `scontrol ping` "
            f"(SLURM_CONF={os.environ.get('SLURM_CONF', 'unset')}): {said[-1] if said else 'no output'}"
        )


def job_record(name: str) -> dict[str, str] | None:
    """The newest job with this name as `scontrol -o show job ID` prints it, or None once forgotten.

    squeue finds the id (`--states=all` keeps finished jobs while slurmctld remembers them),
    so only that job is asked for: every job of a busy cluster would be megabytes per spec.
    """
    listed = subprocess.run(
        ["squeue", "--me", f"--name={name}", "--states=all", "-h", "-o", "%i"],
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
    )
    ids = [int(word) for word in listed.stdout.split() if word.isdigit()]
    if not ids:
        return None
    shown = subprocess.run(
        ["scontrol", "-o", "show", "job", str(max(ids))], capture_output=True, text=True, timeout=COMMAND_SECONDS
    )
    records = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in shown.stdout.splitlines()]
    return next((r for r in records if r.get("JobName") == name), None)


def settled_record(name: str, wait: float) -> dict[str, str] | None:
    """The job's record once Slurm has finished ending it: right after srun exits, a job
    ended by a time limit or scancel can still show COMPLETING for a few seconds."""
    deadline = time.monotonic() + wait
    while True:
        record = job_record(name)
        if record is None or record.get("JobState") not in UNSETTLED or time.monotonic() >= deadline:
            return record
        time.sleep(0.5)


def ending(record: dict[str, str] | None) -> str | None:
    """Why Slurm ended a job, when it was Slurm and not the command."""
    if record is None or record.get("JobState") not in SCHEDULER_ENDINGS:
        return None
    reason = record.get("Reason", "None")
    detail = f", reason {reason}" if reason not in ("None", "") else ""
    limit = (
        f", time limit {record['TimeLimit']}" if record.get("JobState") == "TIMEOUT" and "TimeLimit" in record else ""
    )
    return f"Slurm ended job {record.get('JobId', '?')} as {record['JobState']}{detail}{limit}"


def placement(record: dict[str, str] | None) -> str:
    """Which job and nodes ran the spec; a job that ended while queued had none."""
    if record is None:
        return ""
    nodes = record.get("NodeList", "(null)")
    return f"Slurm job {record.get('JobId', '?')} " + ("(never placed)" if nodes in ("", "(null)") else f"on {nodes}")


def cancel_run(run_tag: str) -> list[str]:
    """scancel every job this run submitted that is still known to the queue; returns their ids."""
    prefix = job_name(run_tag, "")
    listed = subprocess.run(
        ["squeue", "--me", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=COMMAND_SECONDS
    )
    ids = [
        job_id
        for job_id, _, name in (line.partition(" ") for line in listed.stdout.splitlines())
        if name.startswith(prefix)
    ]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=COMMAND_SECONDS)
    return ids


class SlurmBackend:
    """One srun per spec; Slurm's time limit replaces the local one, since time in the queue is not run time."""

    name: ClassVar[str] = "slurm"
    leases_devices: ClassVar[bool] = False
    spans_nodes: ClassVar[bool] = True
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "partition",
            "Slurm partition for every job (--backend slurm; default: the cluster's default partition)",
            metavar="P",
        ),
        Option(
            "slurm_arg",
            "one more srun option for every job (--backend slurm), written with = (e.g. "
            "--slurm-arg=--account=ml); repeatable",
            action="append",
            metavar="ARG",
        ),
    )

    def __init__(self, options: SlurmOptions):
        self.settings = options

    @classmethod
    def from_options(cls, values: Mapping[str, Any], run_tag: str) -> SlurmBackend:
        return cls(SlurmOptions(values.get("partition"), tuple(values.get("slurm_arg") or ()), run_tag))

    def check_available(self) -> None:
        try:
            check_available()
        except SlurmError as error:
            raise BackendError(str(error)) from None

    def inventory(self, values: Mapping[str, Any]) -> Inventory:
        # The cluster hands out the devices: one entry stands for all of them.
        return Inventory(
            ("slurm",), "slurm", f"Slurm (partition {self.settings.partition or 'default'})", scheduled=True
        )

    def workers(self, specs: int, inventory: Inventory) -> int | None:
        return min(specs, MAX_WORKERS)

    def place(self, spec: Spec, devices: tuple[str, ...], inventory: Inventory) -> Placement:
        # Slurm sets each job's CUDA_VISIBLE_DEVICES and cores (--cpus-per-task): the login node's must not leak in.
        return Placement(spec.gpus, {"CUDA_VISIBLE_DEVICES": None, "TRAINSPEC_DEVICE_KIND": self.name})

    def run(
        self, launch: Launch, watchers: Sequence[Watcher] = (), on_start: Callable[[int], None] | None = None
    ) -> ProcessOutcome:
        name = job_name(self.settings.run_tag, launch.spec_id)
        submitted = dataclasses.replace(launch, argv=srun_argv(launch, self.settings), timeout=math.inf)
        try:
            outcome = run_process(submitted, watchers, on_start)
        finally:
            # srun ends its job when it ends, but not when it is killed with SIGKILL.
            subprocess.run(["scancel", f"--name={name}"], capture_output=True, timeout=COMMAND_SECONDS)
        # Asked even after exit code 0: srun exits 0 when its job's node fails.
        record = settled_record(name, SETTLE_SECONDS)
        return dataclasses.replace(outcome, scheduler_reason=ending(record), placement=placement(record))

    def cancel_all(self) -> None:
        # Jobs of workers that died (Ctrl-C, SIGKILL) may still be queued or running.
        cancel_run(self.settings.run_tag)
