"""Failure kinds end to end: the real harness, real processes, simulated devices.

A run that dies once of a device out of memory is retried on another device and reported as an
infra retry; a loss bound broken once is never retried by default (the run fails), and passes on
a retry only when the spec opts in, reported as a numeric flaky, never a plain pass.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

# Fails the first time it runs in this run directory (a marker file there says it ran), as a
# device out of memory does: torch's message on stderr, exit 1. Records the devices it saw.
OOM_ONCE = """
import os, sys
from pathlib import Path
marker, out = Path(sys.argv[1]), Path(sys.argv[2])
(out / "visible.txt").write_text(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
if not marker.exists():
    marker.write_text("ran")
    print("Traceback (most recent call last):", file=sys.stderr)
    print('  File "train.py", line 60, in <module>', file=sys.stderr)
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
          "79.15 GiB of which 1.12 GiB is free.", file=sys.stderr)
    sys.exit(1)
"""

# Logs a final loss of 3.0 the first time, 0.5 after: a loss bound broken once, exit 0 both times.
LOSS_ONCE = """
import json, sys
from pathlib import Path
marker, out = Path(sys.argv[1]), Path(sys.argv[2])
final = 0.5 if marker.exists() else 3.0
marker.write_text("ran")
with open(out / "train_log.jsonl", "w") as log:
    for step, loss in ((1, 4.0), (2, final)):
        log.write(json.dumps({"step": step, "loss": loss}) + "\\n")
"""


def _spec(spec_id: str, script: Path, **fields) -> dict:
    return {
        "id": spec_id,
        "timeout": 60,
        "command": ["{python}", str(script), "{run_dir}/" + spec_id + ".ran", "{output_dir}"],
        **fields,
    }


def test_an_oom_is_retried_on_another_device_and_a_broken_loss_bound_is_not(harness, tmp_path: Path) -> None:
    oom, loss = tmp_path / "oom_once.py", tmp_path / "loss_once.py"
    oom.write_text(OOM_ONCE)
    loss.write_text(LOSS_ONCE)
    bound = {"loss": {"final_max": 1.0}, "log": {"path": "train_log.jsonl"}, "cpu_ok": True, "gpus": 0}
    specs = [
        _spec("oom-once", oom, gpus=1, cpu_ok=True, retries=1, min_steps_logged=0),
        _spec("loss-once", loss, retries=1, **bound),
        _spec("loss-once-opted-in", loss, retries=1, retry_on=["infra", "timeout", "numeric"], **bound),
    ]
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "kinds.yaml").write_text(yaml.safe_dump(specs))
    run = harness("run", "--specs", str(folder), "--fake-gpus", "2")
    assert run.code == 1, run.output

    retried = run.spec("oom-once")
    assert retried["outcome"] == "passed" and retried["flaky"] is True
    first, second = retried["attempts"]
    assert (first["outcome"], first["failure_kind"]) == ("failed", "infra")
    assert first["failure_evidence"].startswith("device out of memory: torch.OutOfMemoryError: CUDA out of memory")
    assert second["outcome"] == "passed" and second["failure_kind"] is None
    assert len(first["devices"]) == len(second["devices"]) == 1 and first["devices"] != second["devices"]
    # Each attempt's child saw the device its record names.
    assert Path(first["output_dir"], "visible.txt").read_text() == first["devices"][0]
    assert Path(second["output_dir"], "visible.txt").read_text() == second["devices"][0]
    warning = next(w for w in retried["warnings"] if "passed on attempt 2" in w)
    assert warning.startswith(f"infra retry: passed on attempt 2 on {second['devices'][0]}"), warning

    broken = run.spec("loss-once")
    assert broken["outcome"] == "failed" and broken["attempts"] == []
    assert broken["failure_kind"] == "numeric"
    assert broken["failure_evidence"].startswith("numeric check: loss.final_max")
    assert "not retried: a numeric failure (retry_on: infra, timeout)" in broken["warnings"]

    opted = run.spec("loss-once-opted-in")
    assert opted["outcome"] == "passed" and opted["flaky"] is True
    assert [a["failure_kind"] for a in opted["attempts"]] == ["numeric", None]
    assert any(w.startswith("numeric flaky: passed on attempt 2") for w in opted["warnings"])

    assert run.results["failures_by_kind"] == {"numeric": ["loss-once"]}
    assert "failed by kind: numeric 1 (loss-once)" in run.output
    assert "numeric flaky: passed on attempt 2" in run.output
    cases = {case.get("name"): case for case in ET.parse(run.run_dir / "junit.xml").getroot().iter("testcase")}
    failure = cases["loss-once"].find("failure")
    assert failure is not None and failure.get("type") == "numeric"
    assert cases["oom-once"].find("failure") is None and cases["oom-once"].find("error") is None
    html = (run.run_dir / "report.html").read_text()
    assert "failed by kind: numeric" in html and "numeric flaky" in html


def test_infra_and_timeout_failures_are_junit_errors_code_ones_failures(harness, tmp_path: Path) -> None:
    """Nothing retried here: each kind as the final word, in junit.xml, results.json and the summary."""
    specs = [
        {
            "id": "port-taken",
            "gpus": 0,
            "min_steps_logged": 0,
            "command": ["{python}", "-c", "import sys; sys.exit('OSError: [Errno 98] Address already in use')"],
        },
        {"id": "hangs", "gpus": 0, "min_steps_logged": 0, "timeout": 1, "command": ["sleep", "30"]},
        {
            "id": "raises",
            "gpus": 0,
            "min_steps_logged": 0,
            "command": ["{python}", "-c", "raise KeyError('input_ids')"],
        },
    ]
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "kinds.yaml").write_text(yaml.safe_dump(specs))
    run = harness("run", "--specs", str(folder))
    assert run.code == 1, run.output
    assert {s["id"]: s["failure_kind"] for s in run.results["specs"]} == {
        "port-taken": "infra",
        "hangs": "timeout",
        "raises": "code",
    }
    assert run.spec("raises")["failure_evidence"] == "exception in the run: KeyError: 'input_ids'"
    assert run.results["failures_by_kind"] == {"infra": ["port-taken"], "code": ["raises"], "timeout": ["hangs"]}
    root = ET.parse(run.run_dir / "junit.xml").getroot()
    cases = {case.get("name"): case for case in root.iter("testcase")}
    assert cases["port-taken"].find("error").get("type") == "infra"
    assert cases["hangs"].find("error").get("type") == "timeout"
    assert cases["raises"].find("failure").get("type") == "code"
    suite = next(root.iter("testsuite"))
    assert (suite.get("errors"), suite.get("failures")) == ("2", "1")
    assert "[infra] " in run.output
    assert "failed by kind: infra 1 (port-taken); code 1 (raises); timeout 1 (hangs)" in run.output
