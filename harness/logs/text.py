"""Training logs printed as text: regular expressions whose named groups are a line's numbers.

A trainer that prints `iter 10: loss 2.1234, time 12.30ms` is read with a pattern such as
`iter (?P<step>\\d+): loss (?P<loss>\\S+)`: each line that a pattern matches becomes one
record, its named groups the record's keys, as if the trainer had written a JSON line.
Lines are read with ANSI colour codes stripped, and each piece a carriage return redraws
(a progress bar) on its own. Numbers may be written any way trainers print them:
`1.034567E+01`, `nan`, `inf`, `-inf`, `1,234`, `1.20%`. A pattern without a `step` group
numbers its lines itself: the n-th line it matches is step n.

The presets (harness/logs/presets.py) are such patterns for trainers people run as they are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from harness.logs.presets import PRESETS
from harness.logs.store import LogError

# CSI sequences (colours, cursor moves) and OSC sequences (window titles, hyperlinks).
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
TEXT_FORMATS = ("text", *PRESETS)


class PatternError(LogError):
    """A pattern that does not compile, or names no group: the message names which."""


def strip_ansi(line: str) -> str:
    return ANSI.sub("", line)


def text_number(text: str) -> float | str:
    """The number a group captured, in any notation a trainer prints; the text itself when it is none
    (so a loss printed as `abc` is reported as logged, like a JSON string)."""
    value = text.strip().rstrip(",;:").removesuffix("%")
    if THOUSANDS.fullmatch(value):
        value = value.replace(",", "")
    try:
        return float(value)
    except ValueError:
        return text.strip()


def compile_patterns(patterns: Sequence[str]) -> list[re.Pattern[str]]:
    """The patterns compiled; PatternError names the first that does not compile or has no named group."""
    compiled = []
    for index, pattern in enumerate(patterns):
        try:
            regex = re.compile(pattern)
        except re.error as error:
            raise PatternError(f"patterns[{index}] {pattern!r} is not a valid regular expression: {error}") from None
        if not regex.groupindex:
            raise PatternError(
                f"patterns[{index}] {pattern!r} has no named group: name each number, e.g. (?P<loss>\\S+)"
            )
        compiled.append(regex)
    return compiled


def format_patterns(fmt: str, extra: Sequence[str]) -> tuple[list[str], int]:
    """The patterns a text format reads: a preset's own, then the spec's; and how many are the preset's."""
    own = list(PRESETS.get(fmt, ()))
    return [*own, *extra], len(own)


class TextRecords:
    """Records of a text log, a line at a time: the line parser of the text formats (as JSON lines have theirs).

    Strict (the final read) holds the patterns the spec wrote to account: a pattern that matched no
    line, or a group that never captured, is an error naming it; a preset's groups are optional (a
    run too short to evaluate prints no eval line), but a log that none of its patterns matches is
    an error too. Lenient (fail-fast, while the run goes) reads what it can.
    """

    def __init__(self, fmt: str, extra: Sequence[str], step_key: str, strict: bool, notes: list[str]):
        texts, self.preset_count = format_patterns(fmt, extra)
        self.texts = texts
        self.patterns = compile_patterns(texts)
        self.fmt = fmt
        self.step_key = step_key
        self.strict = strict
        self.notes = notes
        self.ordinals = [0] * len(self.patterns)
        self.matched = [0] * len(self.patterns)
        self.captured: set[tuple[int, str]] = set()
        self.lines = 0

    def feed(self, lines: list[tuple[int, str]]) -> list[dict]:
        records = []
        for _, line in lines:
            self.lines += 1
            for piece in strip_ansi(line).split("\r"):
                record = self._record(piece)
                if record:
                    records.append(record)
        return records

    def _record(self, piece: str) -> dict:
        record: dict = {}
        first_unstepped: int | None = None
        for index, pattern in enumerate(self.patterns):
            match = pattern.search(piece)
            if match is None:
                continue
            self.matched[index] += 1
            for name, text in match.groupdict().items():
                if text is not None:
                    self.captured.add((index, name))
                    record.setdefault(name, text_number(text))
            if self.step_key not in pattern.groupindex:
                self.ordinals[index] += 1
                first_unstepped = index if first_unstepped is None else first_unstepped
        if record and self.step_key not in record and first_unstepped is not None:
            record[self.step_key] = float(self.ordinals[first_unstepped])
        return record

    def end(self, number: int, rest: str) -> list[dict]:
        records = self.feed([(number, rest)]) if rest.strip() else []
        if self.strict:
            self._account()
        return records

    def _account(self) -> None:
        lines = f"{self.lines} line{'s' if self.lines != 1 else ''}"
        if self.preset_count and not any(self.matched):
            raise PatternError(f"no line of the log ({lines}) matches the {self.fmt} format's patterns")
        for index in range(self.preset_count, len(self.patterns)):
            where = f"patterns[{index - self.preset_count}] {self.texts[index]!r}"
            if not self.matched[index]:
                raise PatternError(f"{where} matched no line of the log ({lines})")
            for name in self.patterns[index].groupindex:
                if (index, name) not in self.captured:
                    raise PatternError(
                        f"the group {name!r} of {where} never matched in the log"
                        f" (the pattern matched {self.matched[index]} of {lines})"
                    )
