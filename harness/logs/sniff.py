"""What a text log is: the preset whose lines it prints, else a pattern proposed from its loss lines.

`python -m harness logs sniff FILE` prints it, and a spec whose training log cannot be
found or read says it in its failure, so a trainer that prints its loss as text is one
`log:` line away from being checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.logs.presets import NUMBER, PRESETS
from harness.logs.text import TextRecords, strip_ansi

# The lines looked at: a trainer prints its first losses early.
SNIFF_BYTES = 1 << 20
SNIFF_LINES = 2000
# The number a proposed pattern captures: shorter to read than the presets' NUMBER, as lenient.
PROPOSED_NUMBER = r"[-+]?(?:[\d.,]*\d(?:[eE][-+]?\d+)?|nan|inf)"
NUMBER_IN_LINE = re.compile(rf"(?<![\w.]){NUMBER}")
STEP_WORDS = {"iter", "iters", "iteration", "it", "step", "steps", "global_step"}
SEPARATORS = re.compile(r"[|,;()\[\]{}]")
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LOSS_LINE = re.compile(r"loss", re.IGNORECASE)


@dataclass
class Sniffed:
    """A preset with how many lines it read, or proposed patterns (one per shape of loss line)."""

    path: Path
    lines: int = 0
    preset: str | None = None
    matched: int = 0
    steps: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    loss_key: str = "loss"

    def spec_lines(self, source: str = "stdout") -> list[str]:
        """The `log:` block that reads this log, as YAML."""
        if self.preset:
            return ["log:", f"  format: {self.preset}", f"  source: {source}"]
        if not self.patterns:
            return []
        lines = ["log:", "  format: text", f"  source: {source}", "  patterns:"]
        lines += [f"    - '{pattern}'" for pattern in self.patterns]
        return lines + ([f"  loss_key: {self.loss_key}"] if self.loss_key != "loss" else [])

    def suggestion(self) -> str | None:
        """One line for a failure message, or None when the file shows no loss at all."""
        name = self.path.name
        if self.preset:
            return f"{name} prints {self.preset}'s lines ({self.matched} read): try log: {{format: {self.preset}}}"
        if self.patterns:
            quoted = ", ".join(f"'{p}'" for p in self.patterns)
            key = f", loss_key: {self.loss_key}" if self.loss_key != "loss" else ""
            return f"{name} prints a loss as text: try log: {{format: text, patterns: [{quoted}]{key}}}"
        return None


def head_lines(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            text = stream.read(SNIFF_BYTES)
    except OSError:
        return []
    return text.splitlines()[:SNIFF_LINES]


def sniff(path: Path) -> Sniffed:
    """The preset that reads the most training losses from the file's first lines, else proposed patterns."""
    lines = head_lines(path)
    found = Sniffed(path, len(lines))
    numbered = list(enumerate(lines, 1))
    best: tuple[int, str, list[dict]] = (0, "", [])
    for preset in PRESETS:
        records = [r for r in TextRecords(preset, (), "step", False, []).feed(numbered) if "loss" in r]
        if len(records) > best[0]:
            best = (len(records), preset, records)
    if best[0]:
        found.preset, found.matched = best[1], best[0]
        found.steps = [r["step"] for r in best[2] if isinstance(r.get("step"), float)]
        found.losses = [r["loss"] for r in best[2] if isinstance(r["loss"], float)]
        return found
    shapes: dict[str, str] = {}
    for line in lines:
        text = strip_ansi(line).split("\r")[-1].strip()
        if LOSS_LINE.search(text) and NUMBER_IN_LINE.search(text):
            shapes.setdefault(NUMBER_IN_LINE.sub("#", text), text)
    named: list[str] = []
    for text in list(shapes.values())[:3]:
        pattern, names = propose(text)
        if any("loss" in name for name in names):
            found.patterns.append(pattern)
            found.matched += sum(1 for line in lines if re.search(pattern, strip_ansi(line)))
            named += names
    if found.patterns and "loss" not in named:
        found.loss_key = next(name for name in named if "loss" in name)
    return found


def propose(line: str) -> tuple[str, list[str]]:
    """A pattern that reads `line`'s numbers, each named after the words before it (`iter 10` is the step)."""
    parts: list[str] = []
    names: list[str] = []
    position = 0
    for match in NUMBER_IN_LINE.finditer(line):
        literal = line[position : match.start()]
        parts.append(_literal(literal))
        name = _name(literal, names)
        parts.append(f"(?P<{name}>{PROPOSED_NUMBER})" if name else f"(?:{PROPOSED_NUMBER})")
        names += [name] if name else []
        position = match.end()
    return "".join(parts).removeprefix(r"\s*"), names


def _literal(text: str) -> str:
    """Text between numbers, matched as written, any run of spaces as any (columns shift as numbers grow)."""
    return r"\s*".join(re.escape(piece) for piece in re.split(r"\s+", text))


def _name(literal: str, taken: list[str]) -> str | None:
    """The words right before a number (after the last separator), as a group name; the step's words as `step`."""
    words = WORD.findall(SEPARATORS.split(literal)[-1])
    if not words:
        return None
    name = "_".join(words).lower()
    if name in STEP_WORDS:
        name = "step"
    if name in taken:
        return None
    return name
