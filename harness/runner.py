"""Run one command in its own process group, in place, with every output in its own folder.

A timeout, a watcher that asks to stop early, or the end of the harness ends the whole
group (torchrun's ranks included), and anything the run left behind in its group is
ended too: no process outlives its spec.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import psutil

from .devices import Inventory, child_environment
from .spec import PROFILES, Spec, render_args

GRACE_SECONDS = 5.0
POLL_SECONDS = 0.01
CENSUS_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
# First on every child's PYTHONPATH: its sitecustomize records the versions the child imports.
CHILD_SITE = Path(__file__).with_name("child_site")
CHILD_VERSIONS_FILE = "child_versions.json"


@dataclass(frozen=True)
class Launch:
    """Everything needed to start one run, already rendered."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    output_dir: Path
    timeout: float
    spec_id: str = ""
    # What the spec asked for, which a cluster backend requests from its scheduler.
    gpus: int = 0  # devices on each node
    nodes: int = 1

    @property
    def stdout_path(self) -> Path:
        return self.output_dir / "stdout.log"

    @property
    def stderr_path(self) -> Path:
        return self.output_dir / "stderr.log"


@dataclass(frozen=True)
class ProcessOutcome:
    """How a run ended. `exit_code` is None when it never started or was killed by a signal."""

    exit_code: int | None
    duration: float
    started: float = 0.0
    signal: int | None = None
    timed_out: bool = False
    stopped_by: str | None = None
    start_error: str | None = None
    leftovers: list[str] = field(default_factory=list)
    scheduler_reason: str | None = None
    placement: str = ""  # where a cluster ran it, in its scheduler's words: the node to suspect when only one fails

    def describe(self) -> str:
        if self.start_error:
            return f"did not start: {self.start_error}"
        if self.scheduler_reason:
            return self.scheduler_reason
        if self.timed_out:
            return f"timed out after {self.duration:.1f} s; its process group was killed"
        if self.stopped_by:
            return f"stopped early: {self.stopped_by}"
        if self.signal is not None:
            return f"killed by signal {signal.Signals(self.signal).name}"
        return f"exit code {self.exit_code}"


class Watcher(Protocol):
    """Follows a live run; returns a reason to stop it now, or None to let it go on."""

    def poll(self) -> str | None: ...


class Backend(Protocol):
    """Where runs execute: this machine's processes, or a cluster's jobs."""

    def run(self, launch: Launch, watchers: Sequence[Watcher] = (), on_start=None) -> ProcessOutcome: ...


def render(text: str, values: dict[str, str]) -> str:
    return text.format_map(values)


def build_argv(spec: Spec, values: dict[str, str], nproc: int) -> list[str]:
    """The spec's command with placeholders filled and args appended; torchrun in front if asked."""
    template = PROFILES[spec.profile or "command"].build_command(spec)
    argv = [render(part, values) for part in template] + [render(part, values) for part in render_args(spec.args)]
    if spec.launcher == "torchrun":
        if template and template[0] == "{python}":
            argv = argv[1:]
        if spec.nodes > 1:
            # The endpoint is known only inside the allocation: harness/rendezvous.py sets it on each node.
            rendezvous = [f"--nnodes={spec.nodes}", "--rdzv-backend=c10d"]
        else:
            # --standalone makes torchrun pick a free rendezvous port, so runs side by side never collide.
            rendezvous = ["--standalone"]
        argv = [sys.executable, "-m", "torch.distributed.run", *rendezvous, f"--nproc-per-node={nproc}", *argv]
    return argv


def cpu_threads(held: int, inventory: Inventory) -> int:
    """A run's share of the cores: in proportion to the devices it holds."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores * max(held, 1) // max(inventory.count, 1))


def placeholder_values(*, repo: Path, run_dir: Path, output_dir: Path, gpus: int, nodes: int = 1) -> dict[str, str]:
    return {"python": sys.executable, "output_dir": str(output_dir), "run_dir": str(run_dir), "repo": str(repo), "gpus": str(gpus), "nodes": str(nodes)}


def build_launch(spec: Spec, *, repo: Path, run_dir: Path, output_dir: Path, devices: tuple[str, ...], inventory: Inventory, base_env: dict[str, str] | None = None) -> Launch:
    """Render a spec into a Launch for the devices it holds."""
    # Under Slurm no device is leased here: the job holds what the spec asked for.
    held = spec.gpus if inventory.kind == "slurm" else len(devices)
    values = placeholder_values(repo=repo, run_dir=run_dir, output_dir=output_dir, gpus=held, nodes=spec.nodes)
    env = dict(os.environ if base_env is None else base_env)
    # Defaults a spec's env may override: offline hubs, no bytecode in the tree, unbuffered logs.
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Bytecode of the project under test would land in its tree; site-packages' is still read.
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    if inventory.kind != "slurm":
        # This machine's cores are shared among its runs; a job's are Slurm's (--cpus-per-task).
        env["OMP_NUM_THREADS"] = str(cpu_threads(len(devices), inventory))
    env.update({key: render(str(value), values) for key, value in spec.env.items()})
    env.update(child_environment(devices, inventory))
    env.update({"TRAINSPEC_SPEC_ID": spec.id, "TRAINSPEC_OUTPUT_DIR": str(output_dir), "TMPDIR": str(output_dir / "tmp")})
    env["TRAINSPEC_VERSIONS_FILE"] = str(output_dir / CHILD_VERSIONS_FILE)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHILD_SITE), env.get("PYTHONPATH")]))
    (output_dir / "tmp").mkdir(parents=True, exist_ok=True)
    if inventory.kind == "slurm":
        # Slurm sets each job's CUDA_VISIBLE_DEVICES; the caller's must not leak into the job.
        env.pop("CUDA_VISIBLE_DEVICES", None)
    nproc = max(1, spec.gpus) if spec.launcher == "torchrun" else 1
    return Launch(build_argv(spec, values, nproc), repo / spec.cwd, env, output_dir, spec.timeout, spec.id, spec.gpus, spec.nodes)


def die_with_parent() -> None:
    """In the child: get SIGTERM if the harness worker dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@functools.cache
def adopt_orphans() -> None:
    """Make this process the parent of its runs' orphans (Linux), rather than init.

    A grandchild whose parent exits (torchrun killed, leaving its ranks, each in a session of
    its own) then becomes our child: it can be found and ended however quickly it left the
    run's group, and once ended it is reaped at once instead of waiting on a slow init.
    A process attribute, so set once per worker.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _children() -> dict[int, psutil.Process]:
    try:
        return {p.pid: p for p in psutil.Process().children()}
    except psutil.Error:
        return {}


def orphans_since(ours_before: set[int], leader: int) -> list[psutil.Process]:
    """Our children that were not ours at `ours_before` and are not the leader: its tree's adopted orphans."""
    return [p for pid, p in _children().items() if pid not in ours_before and pid != leader]


def children_now() -> set[int]:
    return set(_children())


def reap(procs: Sequence[psutil.Process]) -> None:
    """Collect the exit status of adopted orphans that are done, so none lingers as a zombie of ours."""
    for proc in procs:
        try:
            os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return members


def end_group(pgid: int, extra: Sequence[psutil.Process] = (), grace: float = GRACE_SECONDS) -> list[str]:
    """SIGTERM the group (and strays that left it), SIGKILL what is left after `grace`; names what was found."""
    victims = {p.pid: p for p in [*_group_members(pgid), *extra] if p.is_running() and p.status() != psutil.STATUS_ZOMBIE}
    if not victims:
        return []
    names = []
    for proc in victims.values():
        try:
            names.append(f"{proc.pid} {proc.name()}")
        except psutil.Error:
            names.append(str(proc.pid))
    _signal_group(pgid, signal.SIGTERM)
    for proc in victims.values():
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(victims.values()), timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    _signal_group(pgid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=grace)
    return names


def _signal_group(pgid: int, signum: int) -> bool:
    """Signal a process group; False when it has no member left."""
    try:
        os.killpg(pgid, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def run_process(launch: Launch, watchers: Sequence[Watcher] = (), on_start=None) -> ProcessOutcome:
    """Start the launch in a new session, wait for it under its timeout and watchers, clean up its group."""
    launch.output_dir.mkdir(parents=True, exist_ok=True)
    adopt_orphans()
    # Children of ours that appear during the run and are not the command are its orphans.
    ours_before = children_now()
    began, started = time.monotonic(), time.time()
    with open(launch.stdout_path, "wb") as out, open(launch.stderr_path, "wb") as err:
        try:
            proc = subprocess.Popen(launch.argv, cwd=launch.cwd, env=launch.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True, preexec_fn=die_with_parent)
        except OSError as error:
            missing = error.filename if error.filename is not None else launch.argv[0]
            return ProcessOutcome(None, time.monotonic() - began, started, start_error=f"{missing}: {error.strerror or error}")
    if on_start is not None:
        on_start(proc.pid)
    timed_out, stopped_by, known = False, None, {}
    next_census = began + CENSUS_SECONDS
    try:
        while True:
            try:
                proc.wait(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() >= next_census:
                # Remember descendants while they live: one that leaves the group can still be found.
                known.update({p.pid: p for p in descendants(proc.pid)})
                next_census = time.monotonic() + CENSUS_SECONDS
            if time.monotonic() - began > launch.timeout:
                timed_out = True
                break
            stopped_by = next((reason for w in watchers if (reason := w.poll())), None)
            if stopped_by:
                break
    finally:
        if proc.poll() is None:
            # The leader is reaped by Popen itself, so its exit status (the signal) is kept.
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        # The command is gone (and reaped): anything still in its group, or orphaned, was left behind.
        orphans = orphans_since(ours_before, proc.pid)
        strays = [p for p in [*known.values(), *orphans] if p.is_running()]
        leftovers = end_group(proc.pid, strays) if strays or _signal_group(proc.pid, 0) else []
        reap(orphans)
    duration = time.monotonic() - began
    code = proc.returncode
    return ProcessOutcome(
        exit_code=code if code >= 0 else None,
        duration=duration,
        started=started,
        signal=-code if code < 0 else None,
        timed_out=timed_out,
        stopped_by=stopped_by,
        leftovers=leftovers if not (timed_out or stopped_by) else [],
    )


class LocalBackend:
    """Runs on this machine, each spec in its own process group."""

    def run(self, launch: Launch, watchers: Sequence[Watcher] = (), on_start=None) -> ProcessOutcome:
        return run_process(launch, watchers, on_start)
