"""The harness stops on SIGINT, SIGTERM and SIGHUP alike, and a signal meant for one spec stops only that spec.

SIGTERM (CI cancellation, `timeout`, a cluster scheduler's preemption) and SIGHUP (a closed
terminal or SSH session) raise KeyboardInterrupt as Ctrl-C does: pytest stops the session,
every run's group is ended on the way out and the records are written. The controller notes
the interruption in the run directory as the signal lands; an xdist worker that gets SIGTERM
or SIGHUP stops with it only when the controller got it too (the whole group was signalled).
A worker signalled alone (by the spec's own run: `kill $PPID`) raises `Signalled` in the
run in progress instead, a crash of that one spec, and goes on with the next.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

TERMINATING = (signal.SIGTERM, signal.SIGHUP)
STOPPING = {signal.SIGINT, *TERMINATING}
# How long a signalled worker looks for the controller's note before it takes the signal as its own alone.
CONTROLLER_SECONDS = 2.0
POLL_SECONDS = 0.02

# "note": where the controller notes an interruption; "await": where a worker looks for that note.
_where: dict[str, Path] = {}
# Runs in progress in this process (`running`): a worker signalled alone crashes the one it is in.
_running: list[int] = [0]


class Signalled(Exception):
    """An xdist worker got SIGTERM or SIGHUP while the controller did not: the run in progress is ended and fails."""

    def __init__(self, signum: int):
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(
            f"crashed: its harness worker got {name} from outside the harness (the run itself?); the run was ended"
        )


@contextlib.contextmanager
def running() -> Iterator[None]:
    """Marks a run in progress in this process."""
    _running[0] += 1
    try:
        yield
    finally:
        _running[0] -= 1


@contextlib.contextmanager
def interruptions_held(pending: list[int]) -> Iterator[None]:
    """While a run starts, a stopping signal is only noted in `pending`: raised between the fork and
    `proc`, it would leave a started run that nobody ends. A handler rather than a signal mask,
    because a process-wide signal may land on any thread (xdist workers have several) while Python
    runs its handler in the main thread. Outside the main thread nothing is held: handlers never run there."""
    try:
        previous = {signum: signal.signal(signum, lambda signum, frame: pending.append(signum)) for signum in STOPPING}
    except ValueError:
        previous = {}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _ignore_further(signum: int, frame: object) -> None:
    """A handler, not SIG_IGN: an ignored signal stays ignored across exec, in every child started after."""


def _controller_stopping(note: Path) -> bool:
    deadline = time.monotonic() + CONTROLLER_SECONDS
    while not note.exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def _interrupt(signum: int, frame: object) -> None:
    if "await" in _where and not _controller_stopping(_where["await"]):
        if _running[0]:
            raise Signalled(signum)
        return  # between runs a worker has nothing to crash: the signal is ignored
    if "note" in _where:
        with contextlib.suppress(OSError):
            _where["note"].touch()
    # Once: a second SIGTERM (a supervisor repeating itself) must not cut the clean-up and the records short.
    for other in TERMINATING:
        signal.signal(other, _ignore_further)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def interrupt_on_termination(note: Path | None = None, *, worker: bool = False) -> None:
    """Make SIGTERM and SIGHUP raise KeyboardInterrupt, as SIGINT does. The controller passes the run's
    `note` (its interruption marker), written as the signal lands; a `worker` waits for that note first.

    In the main thread only (Python's rule for handlers); left alone where someone set their own.
    """
    if note is not None:
        _where.clear()
        _where["await" if worker else "note"] = note
    for signum in TERMINATING:
        try:
            if signal.getsignal(signum) in (signal.SIG_DFL, _interrupt):
                signal.signal(signum, _interrupt)
        except ValueError:
            return
