"""What the harness prints goes through here: masked, and never the reason a run stops.

A terminal that goes away (output piped into `head -1`, a closed SSH session, stdout closed
by a supervisor) must not stop a run that has started: the records still get written. A
write that fails for that reason sends the stream, and the file descriptor under it, to
/dev/null from then on, so later writes (pytest's, ours, the flush at exit) succeed. And
everything printed (pytest's reports, `-l` locals of an internal error, the summary) is
masked with the run's secrets, so a token in the environment never reaches the terminal.
"""

from __future__ import annotations

import errno
import io
import os
import sys
from typing import Any, TextIO

from harness.secrets import Masker

# Control characters a run may print (escape sequences, BEL, NUL, a bare carriage return), shown as their escapes
# wherever the harness repeats its text: a terminal would obey them (retitle, clear, beep), and XML holds no NUL.
_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if chr(code) not in "\n\t"}


def visible(text: str) -> str:
    """`text` with every control character but newline and tab written as its escape (`\\x1b`)."""
    return text.translate(_CONTROLS)


# A write to a terminal or pipe that is gone: EPIPE (the reader left), EIO (the terminal hung up), EBADF, ENXIO.
GONE = {errno.EPIPE, errno.EIO, errno.EBADF, errno.ENXIO}


class GuardedStream:
    """A text stream that masks what is written and survives the end of whatever reads it."""

    def __init__(self, stream: TextIO, masker: Masker):
        self._stream = stream
        self.masker = masker
        self.gone = False

    def write(self, text: str) -> int:
        masked = self.masker.text(text)
        try:
            self._stream.write(masked)
        except (OSError, ValueError) as error:
            self._lost(error)
        return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError) as error:
            self._lost(error)

    def _lost(self, error: Exception) -> None:
        if isinstance(error, OSError) and error.errno not in GONE:
            raise error
        self.gone = True
        try:
            fd = self._stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
            self._stream.flush()  # what sat in the buffer now goes nowhere, and the flush at exit succeeds
        except (OSError, ValueError):
            self._stream = open(os.devnull, "w")  # kept open for the life of the process, as sys.stdout is

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def ensure_standard_fds() -> None:
    """A process started with stdin, stdout or stderr closed gets /dev/null there, so the first
    file the harness opens (a run's log) is never taken for its stdout."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:  # the lower ones are open by now, so this is only a safeguard
                os.dup2(opened, fd)
                os.close(opened)
    if sys.stdout is None:
        sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), line_buffering=True)
    if sys.stderr is None:
        sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), line_buffering=True)


def guard(masker: Masker) -> None:
    """Route sys.stdout and sys.stderr through GuardedStream with `masker` (again: the masker is replaced)."""
    ensure_standard_fds()
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, GuardedStream):
            stream.masker = masker
        else:
            setattr(sys, name, GuardedStream(stream, masker))
