"""junit.xml told by failure kind: pytest writes every failed spec as a `<failure>` (it failed in its
call); afterwards the failures of the machine, of time and of the harness become `<error>`, as pytest
marks a test that could not run properly (an error in setup) apart from one that ran and failed. CI
systems show errors apart from failures, so a red build from a lost node reads differently from a
broken loss. Each element's `type` names the kind."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

from harness.atomic import atomic_write_text
from harness.records import SpecResult

# Failures of the machine, of time and of the harness: not the code under test, so errors.
ERROR_KINDS = frozenset({"infra", "timeout", "harness"})


def mark_kinds(path: Path, records: Mapping[str, SpecResult]) -> int:
    """Rewrite pytest's junit.xml at `path` in place; returns how many failures became errors.

    A file that is missing or not XML is left alone: the run's results do not depend on it.
    """
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return 0
    moved = 0
    root = tree.getroot()
    for suite in root.iter("testsuite"):
        for case in suite.iter("testcase"):
            record = records.get(case.get("name", ""))
            failure = case.find("failure")
            if record is None or record.failure_kind is None or failure is None:
                continue
            failure.set("type", record.failure_kind)
            failure.set("message", f"{record.failure_kind}: {failure.get('message', '')}")
            if record.failure_kind in ERROR_KINDS:
                failure.tag = "error"
                moved += 1
                for key, change in (("failures", -1), ("errors", 1)):
                    suite.set(key, str(int(suite.get(key, "0")) + change))
    if moved or any(r.failure_kind for r in records.values()):
        atomic_write_text(path, ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n")
    return moved
