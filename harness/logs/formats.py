"""Training logs in the formats trainers write, read into one shape: steps with a loss.

Forgather's `trainer_logs.json` (a JSON array, rewritten as training goes, so possibly
cut short), Hugging Face's `trainer_state.json` (`log_history`), JSON lines, CSV (PyTorch
Lightning's `metrics.csv`, or any file with a header row), TensorBoard event files, and text
read with regular expressions (harness/logs/text.py: a spec's patterns, or a preset for a
well-known trainer). A log that a crash cut short is read up to its last complete record,
and that is said.

Logs written by appending (JSON lines, CSV, event files, text) are read as a stream of records,
a piece at a time, by the same readers that follow a live run (harness/checks/fail_fast.py), so a
log of millions of lines never sits in memory whole.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Callable
from pathlib import Path

from harness.logs.events import EventLog
from harness.logs.lines import LINE_PARSERS, Parser
from harness.logs.store import LogEntry, LogError, TrainingLog, number
from harness.logs.text import TEXT_FORMATS, TextRecords
from harness.spec.globs import find
from harness.spec.sections import LogSpec

READ_LIMIT = 1 << 20
# A line longer than this is no training record: dropped rather than buffered.
LINE_LIMIT = 1 << 20
# Bytes of a file's start remembered to notice it was rewritten (a CSV header that gained a column).
HEAD = 4096
NAMED_FORMATS = {"trainer_logs.json": "forgather", "trainer_state.json": "hf"}
DEFAULT_STEP_KEYS = {
    "forgather": "global_step",
    **dict.fromkeys(("hf", "jsonl", "csv", "tensorboard", *TEXT_FORMATS), "step"),
}
SEARCH_ORDER = (
    ("trainer_logs.json", "forgather"),
    ("trainer_state.json", "hf"),
    ("*.jsonl", "jsonl"),
    ("metrics.csv", "csv"),
    ("*.csv", "csv"),
    ("events.out.tfevents.*", "tensorboard"),
)
APPENDED = ("jsonl", "csv", "tensorboard", *TEXT_FORMATS)
# A text log read from a run's own streams: the file each is written to (a stage's are named after it).
STREAM_FILES = {"stdout": "stdout.log", "stderr": "stderr.log"}
EVENTS_PREFIX = "events.out.tfevents."


def log_globs(spec: LogSpec) -> list[str]:
    """Where a spec's log is looked for, in order: its glob (or a text log's source), else the known names."""
    if spec.format in TEXT_FORMATS:
        source = spec.source or "stdout"
        return [STREAM_FILES.get(source, source)]
    return [spec.path] if spec.path else [p for p, fmt in SEARCH_ORDER if spec.format in ("auto", fmt)]


def find_log(output_dir: Path, spec: LogSpec) -> Path | None:
    """The log file: the spec's glob, else the first known name, shallowest then newest."""
    patterns = log_globs(spec)
    for pattern in patterns:
        found = [p for p in find(output_dir, pattern if "/" in pattern else f"**/{pattern}") if p.is_file()]
        if found:
            return min(found, key=lambda p: (len(p.relative_to(output_dir).parts), -p.stat().st_mtime))
    return None


def detect_format(path: Path, text: str) -> str:
    """The format of a log by its name, else by the start of its text."""
    if path.name in NAMED_FORMATS:
        return NAMED_FORMATS[path.name]
    if path.name.startswith(EVENTS_PREFIX):
        return "tensorboard"
    if path.suffix == ".csv":
        return "csv"
    head = text.lstrip()[:1]
    if head == "[":
        return "forgather"
    if head == "{":
        return "hf" if '"log_history"' in text[:READ_LIMIT] else "jsonl"
    return "csv" if "," in text.lstrip().partition("\n")[0] else "jsonl"


def sniff_format(path: Path, spec: LogSpec) -> str | None:
    """The log's format, or None while a file that only its text can name is still empty."""
    if spec.format != "auto":
        return spec.format
    if path.name in NAMED_FORMATS or path.name.startswith(EVENTS_PREFIX) or path.suffix == ".csv":
        return detect_format(path, "")
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            head = stream.read(READ_LIMIT)
    except OSError:
        return None
    return detect_format(path, head) if head.strip() else None


class Appended:
    """The text appended to a file since the last read; starts over when the file was rewritten
    (it shrank, or its first bytes changed)."""

    def __init__(self, path: Path, limit: int = READ_LIMIT):
        self.path = path
        self.limit = limit
        self.offset = 0
        self.head = b""
        self.restarts = 0
        self.at_end = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def read(self) -> str:
        try:
            with open(self.path, "rb") as stream:
                size = os.fstat(stream.fileno()).st_size
                if size < self.offset or (
                    size > self.offset and self.head and stream.read(len(self.head)) != self.head
                ):
                    self.offset, self.head, self.restarts = 0, b"", self.restarts + 1
                    self._decoder.reset()
                stream.seek(self.offset)
                data = stream.read(self.limit)
        except OSError:
            self.at_end = True
            return ""
        if len(self.head) < HEAD:
            self.head = (self.head + data)[:HEAD]
        self.offset += len(data)
        self.at_end = self.offset >= size
        return self._decoder.decode(data)


def line_parser(fmt: str, spec: LogSpec | None, strict: bool, notes: list[str]) -> Parser:
    """The parser of a line format; the text formats read with the spec's patterns."""
    if fmt in TEXT_FORMATS:
        spec = spec or LogSpec(format=fmt)  # type: ignore[arg-type]
        return TextRecords(fmt, spec.patterns, spec.step_key or DEFAULT_STEP_KEYS[fmt], strict, notes)
    return LINE_PARSERS[fmt](strict, notes)


class LineLog:
    """Records of a log written line by line, read as it grows, at most READ_LIMIT bytes a read."""

    def __init__(self, path: Path, fmt: str, strict: bool, spec: LogSpec | None = None):
        self.stream = Appended(path)
        self.make_parser: Callable[[], Parser] = lambda: line_parser(fmt, spec, strict, self.notes)
        self.strict = strict
        self.notes: list[str] = []
        self._start()

    def _start(self) -> None:
        self.parser = self.make_parser()
        self.pending = ""
        self.number = 0
        self.skipping = False
        self.restarts = self.stream.restarts

    @property
    def exhausted(self) -> bool:
        return self.stream.at_end

    def read(self, final: bool = False) -> list[dict]:
        """Records completed since the last read; `final` (the run is over, the file read to its end)
        takes a last line without its newline too."""
        chunk = self.stream.read()
        if self.stream.restarts != self.restarts:
            self._start()
        text = self.pending + chunk
        if self.skipping:
            newline = text.find("\n")
            if newline < 0:
                self.pending = ""
                return []
            text, self.number, self.skipping = text[newline + 1 :], self.number + 1, False
        cut = text.rfind("\n") + 1
        lines = text[:cut].split("\n")[:-1]
        numbered = list(enumerate(lines, self.number + 1))
        self.number += len(lines)
        self.pending = text[cut:]
        records = self.parser.feed(numbered)
        if final and self.stream.at_end:
            records += self.parser.end(self.number + 1, self.pending)
            self.pending = ""
        elif len(self.pending) > LINE_LIMIT:
            if self.strict:
                raise LogError(f"line {self.number + 1} is longer than {LINE_LIMIT} bytes")
            self.pending, self.skipping = "", True
        return records


def open_reader(path: Path, fmt: str, strict: bool, spec: LogSpec | None = None) -> LineLog | EventLog:
    """The streaming reader of a log written by appending."""
    return EventLog(path) if fmt == "tensorboard" else LineLog(path, fmt, strict, spec)


def parse_log(path: Path, spec: LogSpec, keys: tuple[str, ...] = ()) -> TrainingLog:
    """The training entries (records that carry the loss key) of one log file, and the numbers
    logged under `keys` (the metrics a spec bounds)."""
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise LogError(f"cannot read {path}: {error.strerror}") from None
    fmt = sniff_format(path, spec) or "jsonl"
    if fmt not in APPENDED:
        return parse_text(path, path.read_text(encoding="utf-8", errors="replace"), spec, keys)
    log = TrainingLog(path, fmt, spec.loss_key, spec.step_key or DEFAULT_STEP_KEYS[fmt], keys)
    reader = open_reader(path, fmt, strict=True, spec=spec)
    while True:
        for record in reader.read(final=True):
            log.add(record)
        if reader.exhausted:
            break
    log.notes += reader.notes
    return log


def parse_text(path: Path, text: str, spec: LogSpec, keys: tuple[str, ...] = ()) -> TrainingLog:
    """The training entries of a log's whole text; `path` names the file and, for auto, its format."""
    fmt = spec.format if spec.format != "auto" else detect_format(path, text)
    notes: list[str] = []
    if fmt == "hf":
        try:
            state = json.loads(text)
        except json.JSONDecodeError as error:
            raise LogError(f"{path.name} is not valid JSON (line {error.lineno}): {error.msg}") from None
        except RecursionError:
            raise LogError(f"{path.name} is nested too deeply to read") from None
        except ValueError as error:  # an integer past Python's 4300 digits
            raise LogError(f"{path.name}: {error}") from None
        if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
            raise LogError(f"{path.name} has no log_history list")
        records = state["log_history"]
    elif fmt == "forgather":
        records = _array_records(text, notes)
    elif fmt in LINE_PARSERS or fmt in TEXT_FORMATS:
        parser = line_parser(fmt, spec, True, notes)
        lines = text.split("\n")
        records = parser.feed(list(enumerate(lines[:-1], 1))) + parser.end(len(lines), lines[-1])
    else:
        raise LogError(f"{fmt} logs are read from their file, not from text")
    log = TrainingLog(path, fmt, spec.loss_key, spec.step_key or DEFAULT_STEP_KEYS[fmt], keys, notes)
    for record in records:
        if not isinstance(record, dict):
            raise LogError(f"expected every record to be a JSON object, found {type(record).__name__}")
        log.add(record)
    return log


def _array_records(text: str, notes: list[str]) -> list:
    """Records of a JSON array, keeping every complete one when the array was cut short."""
    decoder = json.JSONDecoder()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    except RecursionError:
        raise LogError("the log is nested too deeply to read") from None
    except ValueError as error:
        raise LogError(str(error)) from None
    if isinstance(data, list):
        return data
    if data is not None:
        raise LogError(f"expected a JSON array of records, found {type(data).__name__}")
    start = text.find("[")
    if start < 0:
        raise LogError("expected a JSON array of records, found no '['")
    cut = "the log is cut short (no closing ']'); read its first {} complete records"
    records: list = []
    pos = start + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            notes.append(cut.format(len(records)))
            break
        if text[pos] == "]":
            break
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            notes.append(cut.format(len(records)))
            break
        except RecursionError:
            raise LogError(f"record {len(records) + 1} is nested too deeply to read") from None
        except ValueError as error:
            raise LogError(f"record {len(records) + 1}: {error}") from None
        records.append(record)
    return records


def entry_of(record: dict, fmt: str, spec: LogSpec) -> LogEntry | None:
    """The training entry of one record, or None for a record without the loss key (an eval or summary)."""
    if spec.loss_key not in record:
        return None
    raw = record[spec.loss_key]
    return LogEntry(number(record.get(spec.step_key or DEFAULT_STEP_KEYS[fmt])), number(raw), raw)
