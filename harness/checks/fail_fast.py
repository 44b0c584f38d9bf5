"""Fail fast: follow a live run's stderr and training log, and stop it at the first sign it fails.

Only what fails the spec anyway stops a run early: a forbidden stderr pattern, or a NaN,
infinite or missing loss when `loss.no_nan` is on. The final checks still read the whole
files once the run has ended; stopping early saves the time a doomed run would go on for
(on a GPU box, the hours until a collective times out).

Each poll reads only what was appended since the last one, at most logs.READ_LIMIT bytes,
so polling at the runner's pace (every 10 ms) stays cheap however large the files grow
(JSON lines, CSV and TensorBoard event files alike). Logs that trainers rewrite whole
(Forgather's trainer_logs.json, Hugging Face's trainer_state.json) are parsed again only
when their size or mtime changed, and no more often than keeps parsing to about a tenth
of the time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from harness.checks.after_run import first_bad_loss
from harness.checks.stderr import PatternScanner
from harness.logs.formats import (
    APPENDED,
    Appended,
    EventLog,
    LineLog,
    LogEntry,
    LogError,
    entry_of,
    find_log,
    open_reader,
    parse_text,
    sniff_format,
)
from harness.process import Watcher
from harness.spec.model import Spec
from harness.spec.sections import LogSpec

DISCOVER_SECONDS = 1.0
# A traceback usually means the process is on its way out: it gets this long to exit by
# itself and keep its own exit code. A run still going after that (a rank that hangs in a
# collective after another rank crashed) is stopped.
PATTERN_GRACE = 5.0
PARSE_SHARE = 10

Clock = Callable[[], float]


class PatternWatcher:
    """Stops a run whose stderr shows a forbidden pattern and that has not exited PATTERN_GRACE s later."""

    def __init__(self, path: Path, patterns: list[str], grace: float = PATTERN_GRACE, clock: Clock = time.monotonic):
        self.stream = Appended(path)
        self.scanner = PatternScanner(patterns)
        self.grace = grace
        self.clock = clock
        self.found: str | None = None
        self.seen_at = 0.0

    def poll(self) -> str | None:
        if self.found is None:
            hits = self.scanner.feed(self.stream.read())
            if not hits:
                return None
            pattern, (line, text) = min(hits.items(), key=lambda hit: hit[1][0])
            self.found = f"{pattern!r} at stderr line {line}: {text}"
            self.seen_at = self.clock()
        return self.found if self.clock() - self.seen_at >= self.grace else None


class GrowingLog:
    """Training entries of a log written by appending (JSON lines, CSV, event files), read as it grows."""

    def __init__(self, path: Path, spec: LogSpec, fmt: str):
        self.spec = spec
        self.fmt = fmt
        try:
            self.reader: LineLog | EventLog | None = open_reader(path, fmt, strict=False, spec=spec)
        except LogError:
            self.reader = None  # the final log check says why it cannot be read

    def new_entries(self) -> list[LogEntry]:
        if self.reader is None:
            return []
        entries = (entry_of(record, self.fmt, self.spec) for record in self.reader.read())
        return [entry for entry in entries if entry is not None]


class WholeFile:
    """Training entries of a log rewritten whole, parsed again only when it changed and not too often."""

    def __init__(self, path: Path, spec: LogSpec, clock: Clock = time.monotonic):
        self.path = path
        self.spec = spec
        self.clock = clock
        self.seen: tuple[int, int] | None = None
        self.next_parse = 0.0
        self.checked = 0

    def new_entries(self) -> list[LogEntry]:
        try:
            stat = self.path.stat()
        except OSError:
            return []
        if (stat.st_size, stat.st_mtime_ns) == self.seen or self.clock() < self.next_parse:
            return []
        began = self.clock()
        self.seen = (stat.st_size, stat.st_mtime_ns)
        try:
            entries = parse_text(self.path, self.path.read_text(encoding="utf-8", errors="replace"), self.spec).entries
        except (OSError, LogError):
            entries = None  # caught mid-write (or malformed): read again once it changes
        self.next_parse = self.clock() + PARSE_SHARE * (self.clock() - began)
        if entries is None:
            return []
        # Records are appended between rewrites; a rewrite that shrank the log starts over.
        fresh = entries[self.checked :] if len(entries) >= self.checked else entries[:]
        self.checked = len(entries)
        return fresh


class LossWatcher:
    """Stops a run at the first NaN, infinite or missing loss its training log shows."""

    def __init__(self, output_dir: Path, spec: LogSpec, clock: Clock = time.monotonic):
        self.output_dir = output_dir
        self.spec = spec
        self.clock = clock
        self.path: Path | None = None
        self.reader: GrowingLog | WholeFile | None = None
        self.next_discovery = 0.0

    def poll(self) -> str | None:
        bad = first_bad_loss(self.new_entries())
        return f"loss {bad} in {self.path.name}" if bad and self.path else None

    def new_entries(self) -> list[LogEntry]:
        """The log's entries written since the last call."""
        self._discover()
        if self.reader is None and self.path is not None:
            fmt = sniff_format(self.path, self.spec)
            if fmt is not None:
                self.reader = (
                    GrowingLog(self.path, self.spec, fmt)
                    if fmt in APPENDED
                    else WholeFile(self.path, self.spec, self.clock)
                )
        return [] if self.reader is None else self.reader.new_entries()

    def _discover(self) -> None:
        """Find the log as the final check will: at every poll until there is one, then now and
        then (a better match may appear), and never for more than about a tenth of the time."""
        began = self.clock()
        if began < self.next_discovery:
            return
        path = find_log(self.output_dir, self.spec)
        if path is not None and path != self.path:
            self.path, self.reader = path, None
        spent = self.clock() - began
        self.next_discovery = self.clock() + max(DISCOVER_SECONDS if self.path else 0.0, PARSE_SHARE * spent)


class StepWatcher(LossWatcher):
    """Stops a run (an interrupt the spec plans, as a preemption would) once its log shows step >= `step`."""

    def __init__(self, output_dir: Path, spec: LogSpec, step: int, clock: Clock = time.monotonic):
        super().__init__(output_dir, spec, clock)
        self.step = step
        self.reached: float | None = None

    def poll(self) -> str | None:
        if self.reached is None:
            self.reached = next(
                (e.step for e in self.new_entries() if e.step is not None and e.step >= self.step), None
            )
        return (
            None
            if self.reached is None
            else f"interrupted as planned: the log showed step {self.reached:g} (interrupt_at_step {self.step})"
        )


def fail_fast_watchers(spec: Spec, output_dir: Path, stderr_path: Path) -> list[Watcher]:
    """The watchers a spec's run gets: only for the checks it has, and none when fail_fast is off."""
    if not spec.fail_fast:
        return []
    watchers: list[Watcher] = []
    if spec.stderr.forbidden_patterns:
        watchers.append(PatternWatcher(stderr_path, spec.stderr.forbidden_patterns))
    if spec.loss is not None and spec.loss.no_nan:
        watchers.append(LossWatcher(output_dir, spec.log))
    return watchers
