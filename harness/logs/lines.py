"""Records of training logs written a line at a time, JSON lines and CSV, and the one way a JSON document is
read: a log a crash cut short keeps its complete records, and whatever a run wrote (a line that is not JSON, an
integer of 5,000 digits, an array nested 100,000 deep, a CSV cell past the csv module's 128 KiB) is a LogError
naming the line, never an exception of the parser's own."""

from __future__ import annotations

import csv
import json
from typing import Any, Protocol

from harness.logs.store import LogError


class JsonLineRecords:
    """Records of JSON lines. Strict (the final check) names the first malformed line unless it is
    the last one (cut short by a crash); lenient (fail-fast) skips what it cannot read."""

    def __init__(self, strict: bool, notes: list[str]):
        self.strict = strict
        self.notes = notes
        self.bad: tuple[int, str] | None = None

    def feed(self, lines: list[tuple[int, str]]) -> list[dict]:
        records = []
        for line_number, line in lines:
            if not line.strip():
                continue
            if self.bad:
                raise LogError(f"line {self.bad[0]} is not JSON: {self.bad[1]}")
            try:
                record = json_value(line)
            except LogError as error:
                self.bad = (line_number, str(error)) if self.strict else None
                continue
            if isinstance(record, dict):
                records.append(record)
            elif self.strict:
                raise LogError(
                    f"line {line_number}: expected every record to be a JSON object, found {type(record).__name__}"
                )
        return records

    def end(self, number: int, rest: str) -> list[dict]:
        records = self.feed([(number, rest)])
        if self.bad:
            self.notes.append(f"the last line ({self.bad[0]}) is cut short and was skipped")
            self.bad = None
        return records


class CsvRecords:
    """Records of a CSV file with a header row; an empty cell is a value not logged in that row
    (Lightning's CSVLogger writes one row per logging call, with only that call's columns)."""

    def __init__(self, strict: bool, notes: list[str]):
        self.strict = strict
        self.notes = notes
        self.header: list[str] | None = None

    def feed(self, lines: list[tuple[int, str]]) -> list[dict]:
        records = []
        for line_number, line in lines:
            if not line.strip():
                continue
            try:
                row = next(csv.reader([line.rstrip("\r")]), [])
            except csv.Error as error:
                # A cell past the csv module's field limit (128 KiB) is no logged number.
                if self.strict:
                    raise LogError(f"line {line_number}: {error}") from None
                continue
            if self.header is None:
                self.header = [cell.strip() for cell in row]
                continue
            if len(row) > len(self.header):
                if self.strict:
                    raise LogError(f"line {line_number} has {len(row)} fields, the header has {len(self.header)}")
                continue
            records.append({key: cell for key, cell in zip(self.header, row, strict=False) if cell.strip()})
        return records

    def end(self, number: int, rest: str) -> list[dict]:
        # A last line without its newline is whole only if it has every column.
        if not rest.strip() or self.header is None or _csv_width(rest) == len(self.header):
            return self.feed([(number, rest)])
        self.notes.append(f"the last line ({number}) is cut short and was skipped")
        return []


def _csv_width(line: str) -> int | None:
    try:
        return len(next(csv.reader([line]), []))
    except csv.Error:
        return None


def json_value(text: str) -> Any:
    """One JSON document; LogError when it is not JSON, nests too deeply to read, or holds an integer of more
    digits than Python converts (4300)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise LogError(error.msg) from None
    except RecursionError:
        raise LogError("nested too deeply to read") from None
    except ValueError as error:
        raise LogError(str(error)) from None


class Parser(Protocol):
    def feed(self, lines: list[tuple[int, str]]) -> list[dict]: ...

    def end(self, number: int, rest: str) -> list[dict]: ...


LINE_PARSERS: dict[str, type[JsonLineRecords] | type[CsvRecords]] = {"jsonl": JsonLineRecords, "csv": CsvRecords}
