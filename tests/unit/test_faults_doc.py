"""docs/faults.md names the test that proves each fault case: every one it names must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAULTS = ROOT / "docs" / "faults.md"
# `tests/.../file.py::test_name` and, after one, the bare `::other_test` of the same file.
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?::(test_\w+)")


def named_tests() -> list[tuple[str, str]]:
    named, current = [], None
    for path, name in REFERENCE.findall(FAULTS.read_text()):
        current = path or current
        assert current, f"::{name} names no file"
        named.append((current, name))
    return named


def test_every_test_the_fault_table_names_exists():
    named = named_tests()
    assert len(named) >= 20
    missing = [
        f"{path}::{name}" for path, name in named if not re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M)
    ]
    assert missing == []
