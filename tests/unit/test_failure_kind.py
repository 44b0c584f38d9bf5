"""The failure kind of real-shaped failure logs (tests/unit/failure_corpus/*.yaml), through the same
path the pipeline takes: a stderr file, a process outcome, the checks it failed, `classify_run`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.checks.after_run import CheckResult, check_exit, with_root_error
from harness.checks.failure_kind import RULES, Evidence, Verdict, classify, classify_run
from harness.process import ProcessOutcome

CORPUS = Path(__file__).with_name("failure_corpus")
CASES: list[dict[str, Any]] = [
    case for path in sorted(CORPUS.glob("*.yaml")) for case in yaml.safe_load(path.read_text())
]


def verdict(case: dict[str, Any], tmp_path: Path) -> Verdict:
    stderr = tmp_path / f"{case['id']}.stderr.log"
    stderr.write_text(case.get("stderr") or "")
    outcome = ProcessOutcome(
        exit_code=case.get("exit_code", 1),
        duration=1.0,
        signal=case.get("signal"),
        timed_out=case.get("timed_out", False),
        stopped_by=case.get("stopped_by"),
        start_error=case.get("start_error"),
        scheduler_reason=case.get("scheduler"),
    )
    # As run_checks builds them: how the process ended first, then the spec's checks, the root error attached.
    results = [check_exit(outcome), *(CheckResult(name, False, "", found) for name, found in case.get("checks", []))]
    failed = [c for c in with_root_error(results, outcome, stderr) if not c.passed]
    return classify_run(outcome, failed, stderr)


def test_the_corpus_is_large_and_labels_every_kind():
    assert len(CASES) >= 60
    assert len({case["id"] for case in CASES}) == len(CASES)
    assert {case["kind"] for case in CASES} == {"infra", "code", "numeric", "timeout", "harness"}


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_each_log_gets_its_kind_with_the_line_that_decided(case: dict[str, Any], tmp_path: Path):
    found = verdict(case, tmp_path)
    assert found.kind == case["kind"], found.evidence
    rule, _, line = found.evidence.partition(": ")
    assert line.strip(), found.evidence
    assert "\n" not in found.evidence


def test_at_least_95_percent_right_and_no_numeric_or_code_failure_called_infra(tmp_path: Path):
    verdicts = {case["id"]: (case["kind"], verdict(case, tmp_path).kind) for case in CASES}
    right = sum(expected == got for expected, got in verdicts.values())
    assert right / len(verdicts) >= 0.95, {k: v for k, v in verdicts.items() if v[0] != v[1]}
    blamed = [k for k, (expected, got) in verdicts.items() if expected in ("numeric", "code") and got == "infra"]
    assert blamed == []


def test_every_rule_decides_at_least_one_real_log(tmp_path: Path):
    deciding = {verdict(case, tmp_path).evidence.partition(": ")[0] for case in CASES}
    assert {rule.name for rule in RULES} - deciding == set()


def test_what_no_rule_claims_is_code_never_infra():
    assert classify(Evidence()).kind == "code"
    assert classify(Evidence(stderr="something odd happened\n", exit="exit code 3")).kind == "code"
    assert classify(Evidence(checks=(("exit_code", "exit code 0"),))).kind == "code"


def test_a_root_exception_speaks_before_later_stderr_lines():
    """Rank 0 raised; the other ranks' lost connections after it are consequences, not the cause."""
    found = classify(
        Evidence(
            root="KeyError: 'input_ids'",
            stderr="RuntimeError: [gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:42917\n",
            exit="exit code 1",
        )
    )
    assert found == Verdict("code", "exception in the run: KeyError: 'input_ids'")


def test_a_run_the_harness_stopped_is_not_blamed_on_its_kill_signal(tmp_path: Path):
    stderr = tmp_path / "stderr.log"
    stderr.write_text("")
    stopped = ProcessOutcome(exit_code=None, duration=1.0, signal=9, stopped_by="loss nan at step 3 in log.jsonl")
    assert classify_run(stopped, [check_exit(stopped)], stderr).kind == "numeric"
    killed = ProcessOutcome(exit_code=None, duration=1.0, signal=9)
    assert classify_run(killed, [check_exit(killed)], stderr) == Verdict("infra", "killed (the OOM killer): SIGKILL")
