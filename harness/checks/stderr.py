"""A run's stderr read in bounded memory, however large: the first line matching each forbidden pattern,
the last lines, and the root error of a failed run (the exception that ended the first traceback)."""

from __future__ import annotations

import re
from pathlib import Path

from harness.spec.rules import matches
from harness.terminal import visible

CHUNK = 1 << 20
OVERLAP = 4096
LINE_LIMIT = 300
TRACEBACK = "Traceback (most recent call last):"
# What torchrun raises when a rank failed: never the root error itself.
LAUNCHER_ERRORS = ("torch.distributed.elastic.multiprocessing.errors.ChildFailedError",)
EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(:|$)")
CHAINED = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
# An exception line is kept whole up to this many characters; stderr is read a line of at most this at a time.
ERROR_LIMIT = 8192
# Lines after an exception that may still lead to the next link of its chain (its message's own lines, blanks).
CHAIN_LOOKAHEAD = 200


class PatternScanner:
    """Finds the first line matching each pattern in a stream fed in pieces, in bounded memory.

    The same object serves a finished file and a live one followed as it grows.
    """

    def __init__(self, patterns: list[str]):
        self.pending = list(patterns)
        self.hits: dict[str, tuple[int, str]] = {}
        self._tail = ""
        self._line = 1

    def feed(self, chunk: str) -> dict[str, tuple[int, str]]:
        """Scan more text; returns the patterns that matched for the first time."""
        text = self._tail + chunk
        cut = text.rfind("\n") + 1
        if cut == 0 and len(text) > OVERLAP:
            # One line longer than the overlap (a progress bar redrawn with \r): scan what
            # there is and keep its end, so a pattern cut by the next piece is still seen whole.
            found = self._scan(text)
            self._tail = text[-OVERLAP:]
            return found
        found = self._scan(text[:cut])
        self._line += text.count("\n", 0, cut)
        self._tail = text[cut:]
        return found

    def finish(self) -> dict[str, tuple[int, str]]:
        found = self._scan(self._tail)
        self._tail = ""
        return found

    def _scan(self, text: str) -> dict[str, tuple[int, str]]:
        found: dict[str, tuple[int, str]] = {}
        if not text:
            return found
        for pattern in list(self.pending):
            if not matches(pattern, text):
                continue
            for offset, line in enumerate(text.splitlines()):
                if matches(pattern, line):
                    found[pattern] = (self._line + offset, line.strip()[:LINE_LIMIT])
                    break
            else:
                found[pattern] = (self._line, text.strip()[:LINE_LIMIT])
            self.pending.remove(pattern)
        self.hits.update(found)
        return found


def scan_file(path: Path, patterns: list[str]) -> dict[str, tuple[int, str]]:
    scanner = PatternScanner(patterns)
    if not patterns or not path.is_file():
        return {}
    with open(path, encoding="utf-8", errors="replace") as stream:
        while scanner.pending and (chunk := stream.read(CHUNK)):
            scanner.feed(chunk)
    scanner.finish()
    return scanner.hits


def tail(path: Path, lines: int = 20, max_bytes: int = 16384) -> str:
    """The last lines of a file, reading at most `max_bytes` however large it is."""
    try:
        with open(path, "rb") as stream:
            stream.seek(0, 2)
            size = stream.tell()
            stream.seek(max(0, size - max_bytes))
            data = stream.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return visible("\n".join(data.splitlines()[-lines:]))


def root_error(stderr_path: Path) -> str | None:
    """The exception line that ends the first traceback in stderr: under torchrun, the first rank
    to fail (torchrun's own traceback and summary come after its ranks'). Lines are followed by
    the traceback's prefix (`[rank1]: `), so other ranks' interleaved lines are passed over; of a
    chained exception, the last one raised. Read a line at a time, in bounded memory."""
    prefix: str | None = None
    error: str | None = None
    chained = False
    since_error = 0
    try:
        with open(stderr_path, encoding="utf-8", errors="replace") as stream:
            for line in iter(lambda: stream.readline(ERROR_LIMIT), ""):
                if prefix is None:
                    if TRACEBACK in line:
                        prefix = line[: line.index(TRACEBACK)]
                    continue
                if not line.startswith(prefix):
                    continue
                body = line[len(prefix) :].rstrip("\r\n")
                if error is None:
                    # Lines of other processes interleave (logs, C++ warnings): an exception line is `Name: text` or
                    # `Name`.
                    if body.startswith((" ", "\t")) or TRACEBACK in body or not EXCEPTION_LINE.match(body.strip()):
                        continue
                    error, since_error, chained = body.strip(), 0, False
                elif body.strip() in CHAINED:
                    chained = True
                elif chained and TRACEBACK in body:
                    error = None
                else:
                    since_error += 1
                    if since_error > CHAIN_LOOKAHEAD or (not chained and TRACEBACK in body):
                        if not error.startswith(LAUNCHER_ERRORS):
                            break
                        # A launcher's own traceback only says a rank failed: look on for the rank's.
                        prefix = line[: line.index(TRACEBACK)] if TRACEBACK in line else None
                        error, chained = None, False
    except OSError:
        return None
    return None if error is None or error.startswith(LAUNCHER_ERRORS) else error
