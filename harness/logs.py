"""Training logs in the formats trainers write, read into one shape: steps with a loss.

Forgather's `trainer_logs.json` (a JSON array, rewritten as training goes, so possibly
cut short), Hugging Face's `trainer_state.json` (`log_history`), and JSON lines. A log
that a crash cut short is read up to its last complete record, and that is said.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .spec import LogSpec

NAMED_FORMATS = {"trainer_logs.json": "forgather", "trainer_state.json": "hf"}
DEFAULT_STEP_KEYS = {"forgather": "global_step", "hf": "step", "jsonl": "step"}
SEARCH_ORDER = ("trainer_logs.json", "trainer_state.json", "*.jsonl")


class LogError(Exception):
    """The training log is missing or cannot be read; the message says which and why."""


@dataclass(frozen=True)
class LogEntry:
    """One training record: its step, its loss (None when missing or not a number) and all its fields."""

    step: float | None
    loss: float | None
    raw_loss: Any
    record: dict

    @property
    def finite(self) -> bool:
        return self.loss is not None and math.isfinite(self.loss)


@dataclass
class TrainingLog:
    path: Path
    format: str
    entries: list[LogEntry]
    notes: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)

    @property
    def final(self) -> LogEntry | None:
        return self.entries[-1] if self.entries else None

    def values(self, key: str) -> list[float]:
        """The numbers logged under `key` in any record, in order (NaN and infinities included:
        bounds must see them). Metrics such as eval_loss or train_runtime live in records of
        their own, without the training loss."""
        numbers = (_number(record.get(key)) for record in self.records)
        return [value for value in numbers if value is not None]

    def curve(self) -> list[tuple[float | None, float | None]]:
        return [(e.step, e.loss) for e in self.entries]


def _number(value: Any) -> float | None:
    """Numbers, and the spellings of NaN and infinity that loggers write as strings."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def find_log(output_dir: Path, spec: LogSpec) -> Path | None:
    """The log file: the spec's glob, else the first known name, shallowest then newest."""
    patterns = [spec.path] if spec.path else [p for p in SEARCH_ORDER if spec.format in ("auto", _format_of_pattern(p))]
    for pattern in patterns:
        found = [p for p in output_dir.glob(pattern if "/" in pattern else f"**/{pattern}") if p.is_file()]
        if found:
            return min(found, key=lambda p: (len(p.relative_to(output_dir).parts), -p.stat().st_mtime))
    return None


def _format_of_pattern(pattern: str) -> str:
    return NAMED_FORMATS.get(pattern, "jsonl")


def detect_format(path: Path, text: str) -> str:
    if path.name in NAMED_FORMATS:
        return NAMED_FORMATS[path.name]
    head = text.lstrip()[:1]
    if head == "[":
        return "forgather"
    if head == "{" and '"log_history"' in text[:1_000_000]:
        return "hf"
    return "jsonl"


def _array_records(text: str, notes: list[str]) -> list:
    """Records of a JSON array, keeping every complete one when the array was cut short."""
    decoder = json.JSONDecoder()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, list):
        return data
    if data is not None:
        raise LogError(f"expected a JSON array of records, found {type(data).__name__}")
    start = text.find("[")
    if start < 0:
        raise LogError("expected a JSON array of records, found no '['")
    cut = "the log is cut short (no closing ']'); read its first {} complete records"
    records, pos = [], start + 1
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
        records.append(record)
    return records


def _jsonl_records(text: str, notes: list[str]) -> list:
    records = []
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):
                notes.append(f"the last line ({number}) is cut short and was skipped")
                break
            raise LogError(f"line {number} is not JSON: {error.msg}") from None
    return records


def parse_log(path: Path, spec: LogSpec) -> TrainingLog:
    """Read the training entries (records that carry the loss key) of one log file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise LogError(f"cannot read {path}: {error.strerror}") from None
    return parse_text(path, text, spec)


def parse_text(path: Path, text: str, spec: LogSpec) -> TrainingLog:
    """The training entries of a log's text; `path` names the file and, for auto, its format."""
    fmt = spec.format if spec.format != "auto" else detect_format(path, text)
    notes: list[str] = []
    if fmt == "hf":
        try:
            state = json.loads(text)
        except json.JSONDecodeError as error:
            raise LogError(f"{path.name} is not valid JSON (line {error.lineno}): {error.msg}") from None
        if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
            raise LogError(f"{path.name} has no log_history list")
        records = state["log_history"]
    elif fmt == "forgather":
        records = _array_records(text, notes)
    else:
        records = _jsonl_records(text, notes)
    entries = []
    for record in records:
        if not isinstance(record, dict):
            raise LogError(f"expected every record to be a JSON object, found {type(record).__name__}")
        entry = entry_of(record, fmt, spec)
        if entry is not None:
            entries.append(entry)
    return TrainingLog(path, fmt, entries, notes, records)


def entry_of(record: dict, fmt: str, spec: LogSpec) -> LogEntry | None:
    """The training entry of one record, or None for a record without the loss key (an eval or summary)."""
    if spec.loss_key not in record:
        return None
    raw = record[spec.loss_key]
    return LogEntry(_number(record.get(spec.step_key or DEFAULT_STEP_KEYS[fmt])), _number(raw), raw, record)
