"""Failures grouped by kind in the reports (harness.report.kinds) and junit.xml told by kind (harness.report.junit)."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.records import RunDocument, SpecResult
from harness.report.junit import mark_kinds
from harness.report.kinds import failures_by_kind, kind_lines, recovered
from harness.report.summary import render_markdown, summary_lines

RECORDS = [
    SpecResult("test_numbers", "failed", reason="loss.final_max: 3.1 at step 60", failure_kind="numeric"),
    SpecResult("test_oom", "failed", reason="torch.OutOfMemoryError: CUDA out of memory", failure_kind="infra"),
    SpecResult("test_raises", "failed", reason="KeyError: 'input_ids'", failure_kind="code"),
    SpecResult("test_hangs", "failed", reason="timed out after 1.0 s", failure_kind="timeout"),
    SpecResult("test_worker", "error", reason="the worker running it died"),
    SpecResult("test_fine", "passed"),
]


def test_failures_are_grouped_in_a_fixed_order_of_kinds_and_unclassified_last():
    assert failures_by_kind(RECORDS) == {
        "infra": ["test_oom"],
        "code": ["test_raises"],
        "numeric": ["test_numbers"],
        "timeout": ["test_hangs"],
        "unclassified": ["test_worker"],
    }
    assert failures_by_kind([SpecResult("ok", "passed")]) == {}
    assert kind_lines([SpecResult("ok", "passed")]) == []


def test_the_summary_leads_each_reason_with_its_kind_and_says_what_a_retry_recovered_from(tmp_path: Path):
    flaky = SpecResult(
        "retried", "passed", flaky=True, warnings=["numeric flaky: passed on attempt 2 after 1 failed (numeric: ...)"]
    )
    assert recovered(flaky).startswith("numeric flaky: ")
    assert recovered(SpecResult("plain", "passed")) == ""
    lines = summary_lines([*RECORDS, flaky], tmp_path)
    assert any("[infra] torch.OutOfMemoryError" in line for line in lines)
    assert any(line.startswith("FLAKY") and "numeric flaky: passed on attempt 2" in line for line in lines)
    assert (
        "failed by kind: infra 1 (test_oom); code 1 (test_raises); numeric 1 (test_numbers); "
        "timeout 1 (test_hangs); unclassified 1 (test_worker)"
    ) in lines


def test_markdown_lists_failures_grouped_by_kind():
    markdown = render_markdown([RunDocument(RECORDS)], ["run"])
    failures = markdown.split("### Failures", 1)[1].strip().splitlines()
    assert [line.split("`")[1] for line in failures] == [
        "test_oom",
        "test_raises",
        "test_numbers",
        "test_hangs",
        "test_worker",
    ]
    assert "**infra** `test_oom`" in markdown


def test_junit_errors_for_the_machine_time_and_the_harness_failures_for_code_and_numbers(tmp_path: Path):
    """On the XML pytest's own junitxml writes for failing tests."""
    tests = tmp_path / "test_specs.py"
    tests.write_text(
        "".join(f"def {r.id}():\n    assert {r.outcome == 'passed'}, {r.reason!r}\n" for r in RECORDS)
        + "def test_harness():\n    assert False, 'worker died'\n"
    )
    xml = tmp_path / "junit.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", str(tests), f"--junitxml={xml}", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    records = {r.id: r for r in RECORDS} | {"test_harness": SpecResult("test_harness", "error", failure_kind="harness")}
    assert mark_kinds(xml, records) == 3
    root = ET.parse(xml).getroot()
    cases = {case.get("name"): case for case in root.iter("testcase")}
    for name, tag, kind in [
        ("test_oom", "error", "infra"),
        ("test_hangs", "error", "timeout"),
        ("test_harness", "error", "harness"),
        ("test_raises", "failure", "code"),
        ("test_numbers", "failure", "numeric"),
    ]:
        element = cases[name].find(tag)
        assert element is not None and element.get("type") == kind, name
        assert element.get("message", "").startswith(f"{kind}: "), name
    # No kind recorded: pytest's own failure, untouched.
    assert cases["test_worker"].find("failure").get("type") is None
    suite = next(root.iter("testsuite"))
    assert (suite.get("errors"), suite.get("failures")) == ("3", "3")


def test_a_missing_or_broken_junit_file_is_left_alone(tmp_path: Path):
    assert mark_kinds(tmp_path / "absent.xml", {}) == 0
    broken = tmp_path / "junit.xml"
    broken.write_text("<testsuites><testsuite")
    assert mark_kinds(broken, {r.id: r for r in RECORDS}) == 0
    assert broken.read_text() == "<testsuites><testsuite"
