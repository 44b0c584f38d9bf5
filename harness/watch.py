"""Fail fast: follow a live run's stderr and training log, and stop it at the first sign it fails.

Only what fails the spec anyway stops a run early: a forbidden stderr pattern, or a NaN,
infinite or missing loss when `loss.no_nan` is on. The final checks still read the whole
files once the run has ended; stopping early saves the time a doomed run would go on for
(on a GPU box, the hours until a collective times out).

Each poll reads only what was appended since the last one, at most READ_LIMIT bytes, so
polling at the runner's pace (every 10 ms) stays cheap however large the files grow. Logs
that trainers rewrite whole (Forgather's trainer_logs.json, Hugging Face's
trainer_state.json) are parsed again
only when their size or mtime changed, and no more often than keeps parsing to about a
tenth of the time.
"""

from __future__ import annotations

import codecs
import json
import os
import time
from pathlib import Path
from typing import Callable

from .checks import PatternScanner, first_bad_loss
from .launch import Watcher
from .logs import NAMED_FORMATS, LogEntry, LogError, detect_format, entry_of, find_log, parse_text
from .spec import LogSpec, Spec

READ_LIMIT = 1 << 20
# A JSON-lines record longer than this is no training record: dropped rather than buffered.
LINE_LIMIT = 1 << 20
DISCOVER_SECONDS = 1.0
# A traceback usually means the process is on its way out: it gets this long to exit by
# itself and keep its own exit code. A run still going after that (a rank that hangs in a
# collective after another rank crashed) is stopped.
PATTERN_GRACE = 5.0
PARSE_SHARE = 10

Clock = Callable[[], float]


class Appended:
    """The text appended to a file since the last read; starts over when the file shrinks (rewritten)."""

    def __init__(self, path: Path, limit: int = READ_LIMIT):
        self.path = path
        self.limit = limit
        self.offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def read(self) -> str:
        try:
            with open(self.path, "rb") as stream:
                if os.fstat(stream.fileno()).st_size < self.offset:
                    self.offset = 0
                    self._decoder.reset()
                stream.seek(self.offset)
                data = stream.read(self.limit)
        except OSError:
            return ""
        self.offset += len(data)
        return self._decoder.decode(data)


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


class JsonLines:
    """Training entries of a JSON-lines log, read as it grows; only complete lines count."""

    def __init__(self, path: Path, spec: LogSpec):
        self.stream = Appended(path)
        self.spec = spec
        self.pending = ""

    def new_entries(self) -> list[LogEntry]:
        text = self.pending + self.stream.read()
        cut = text.rfind("\n") + 1
        self.pending = text[cut:] if len(text) - cut <= LINE_LIMIT else ""
        entries = []
        for line in text[:cut].splitlines():
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue  # the final log check names the malformed line
            entry = entry_of(record, "jsonl", self.spec) if isinstance(record, dict) else None
            if entry is not None:
                entries.append(entry)
        return entries


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
        fresh = entries[self.checked :] if len(entries) >= self.checked else entries
        self.checked = len(entries)
        return fresh


class LossWatcher:
    """Stops a run at the first NaN, infinite or missing loss its training log shows."""

    def __init__(self, output_dir: Path, spec: LogSpec, clock: Clock = time.monotonic):
        self.output_dir = output_dir
        self.spec = spec
        self.clock = clock
        self.path: Path | None = None
        self.reader: JsonLines | WholeFile | None = None
        self.next_discovery = 0.0

    def poll(self) -> str | None:
        self._discover()
        if self.reader is None and self.path is not None:
            fmt = self._format(self.path)
            if fmt is not None:
                self.reader = JsonLines(self.path, self.spec) if fmt == "jsonl" else WholeFile(self.path, self.spec, self.clock)
        if self.reader is None or self.path is None:
            return None
        bad = first_bad_loss(self.reader.new_entries())
        return f"loss {bad} in {self.path.name}" if bad else None

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

    def _format(self, path: Path) -> str | None:
        """The log's format, or None while an unnamed file is still too empty to tell."""
        if self.spec.format != "auto":
            return self.spec.format
        try:
            with open(path, encoding="utf-8", errors="replace") as stream:
                head = stream.read(READ_LIMIT)
        except OSError:
            return None
        return detect_format(path, head) if head.strip() or path.name in NAMED_FORMATS else None


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
