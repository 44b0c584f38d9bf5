"""Run one command in its own process group, in place, with every output in its own folder.

A timeout, a watcher that asks to stop early, or the end of the harness ends the whole
group (torchrun's ranks included), and anything the run left behind in its group is
ended too: no process outlives its spec.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil

from harness.launch import Launch
from harness.process.interrupts import interruptions_held, running

GRACE_SECONDS = 5.0
POLL_SECONDS = 0.01
CENSUS_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


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
    return end_groups([pgid], extra, grace)


def end_groups(pgids: Sequence[int], extra: Sequence[psutil.Process] = (), grace: float = GRACE_SECONDS) -> list[str]:
    """`end_group` for several groups at once: one grace for all of them, not one each."""
    members = [p for pgid in pgids for p in _group_members(pgid)]
    victims = {p.pid: p for p in [*members, *extra] if p.is_running() and p.status() != psutil.STATUS_ZOMBIE}
    if not victims:
        return []
    names = []
    for proc in victims.values():
        try:
            names.append(f"{proc.pid} {proc.name()}")
        except psutil.Error:
            names.append(str(proc.pid))
    for pgid in pgids:
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
    for pgid in pgids:
        _signal_group(pgid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=grace)
    return names


def group_key(pgid: int) -> list:
    """A process group's identity: its id and its leader's start time (a later group may reuse the id)."""
    try:
        return [pgid, psutil.Process(pgid).create_time()]
    except psutil.Error:
        return [pgid, 0.0]


def group_alive(key: Sequence) -> bool:
    """Whether any process of the group `key` still lives, its leader dead or not. A leader of another
    start time means the id was reused, which the kernel allows only once the group was empty."""
    pgid, started = int(key[0]), float(key[1])
    try:
        if psutil.Process(pgid).create_time() != started:
            return False
    except psutil.Error:
        pass
    return bool(_group_members(pgid))


# Where this process notes each run's group while it runs (`track_groups`); None: nowhere.
_tracked_in: list[Path] = []


def track_groups(folder: Path) -> None:
    """Note every run's process group in `folder` while it runs, so that the controller can end what a
    worker could not (a worker killed, or torn down mid-clean-up by xdist while a run ignores SIGTERM)."""
    _tracked_in[:] = [folder]


def track(pid: int) -> None:
    if _tracked_in:
        try:
            _tracked_in[0].mkdir(parents=True, exist_ok=True)
            (_tracked_in[0] / str(pid)).write_text(json.dumps(group_key(pid)))
        except OSError:
            pass  # a full or read-only disk: the run's own clean-up still ends it


def untrack(pid: int) -> None:
    if _tracked_in:
        with contextlib.suppress(OSError):
            (_tracked_in[0] / str(pid)).unlink()


def end_tracked_groups(folder: Path) -> list[str]:
    """End every group noted in `folder` that still has a live process, and the notes; for the end of a run."""
    keys, notes = [], sorted(folder.glob("*")) if folder.is_dir() else []
    for path in notes:
        try:
            key = json.loads(path.read_text())
            if group_alive(key):
                keys.append(int(key[0]))
        except (OSError, ValueError, TypeError, IndexError):
            pass
    ended = end_groups(keys) if keys else []
    with contextlib.suppress(OSError):
        for path in notes:
            path.unlink(missing_ok=True)
        folder.rmdir()
    return ended


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


def run_process(
    launch: Launch, watchers: Sequence[Watcher] = (), on_start: Callable[[int], None] | None = None
) -> ProcessOutcome:
    """Start the launch in a new session, wait for it under its timeout and watchers, clean up its group."""
    with running():
        return _run_process(launch, watchers, on_start)


def _run_process(launch: Launch, watchers: Sequence[Watcher], on_start: Callable[[int], None] | None) -> ProcessOutcome:
    launch.output_dir.mkdir(parents=True, exist_ok=True)
    adopt_orphans()
    # Children of ours that appear during the run and are not the command are its orphans.
    ours_before = children_now()
    began, started = time.monotonic(), time.time()
    pending: list[int] = []
    try:
        with interruptions_held(pending), open(launch.stdout_path, "wb") as out, open(launch.stderr_path, "wb") as err:
            proc = subprocess.Popen(
                launch.argv,
                cwd=launch.cwd,
                env=launch.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
    except OSError as error:
        missing = error.filename if error.filename is not None else launch.argv[0]
        if pending:
            signal.raise_signal(pending[0])
        return ProcessOutcome(
            None, time.monotonic() - began, started, start_error=f"{missing}: {error.strerror or error}"
        )
    timed_out, stopped_by, known = False, None, {}
    next_census = began + CENSUS_SECONDS
    try:
        track(proc.pid)
        if pending:
            # Now that the run is tracked, the interruption goes to its real handler; the finally below ends the run.
            signal.raise_signal(pending[0])
        if on_start is not None:
            on_start(proc.pid)
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
        untrack(proc.pid)
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
