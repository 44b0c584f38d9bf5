"""Specs in stages, end to end: a real training stopped by a real SIGTERM at a step, then resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ..conftest import REPO

pytestmark = pytest.mark.e2e

BUNDLED = REPO / "specs" / "tinylm_resume.yaml"


def _variant(folder: Path, spec_id: str, resume: bool) -> Path:
    """The bundled resume spec, shortened; without `--resume` the second stage starts again from step 1."""
    spec = yaml.safe_load(BUNDLED.read_text())
    spec["id"] = spec_id
    for stage in spec["stages"]:
        stage["args"]["max_steps"] = 60
    if not resume:
        spec["stages"][-1]["command"].remove("--resume")
    path = folder / f"{spec_id}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_interrupted_then_resumed_passes_and_a_restart_from_step_one_fails(harness, tmp_path: Path) -> None:
    good, bad = _variant(tmp_path, "resumes", True), _variant(tmp_path, "restarts", False)
    run = harness("run", str(good), str(bad), "--fake-gpus", "2")
    assert run.code == 1, run.output
    passed, failed = run.spec("resumes"), run.spec("restarts")

    assert passed["outcome"] == "passed", passed["reason"]
    straight, train, resume = passed["stages"]
    assert straight["outcome"] == "passed"
    assert train["outcome"] == "interrupted" and train["exit_code"] is None  # stopped by the harness's SIGTERM
    assert 50 <= json.loads(Path(train["log"]).read_text().splitlines()[-1])["step"] < 60
    assert resume["outcome"] == "passed" and resume["exit_code"] == 0
    first_resumed = json.loads(Path(resume["log"]).read_text().splitlines()[0])["step"]
    # The first step logged after the last saved state (saved every 20), on the straight run's steps.
    assert first_resumed in (25, 45)
    (same,) = passed["parity"]
    assert same["kind"] == "stage parity" and same["status"] == "passed", same
    assert (same["spec"], same["partner"]) == ("resume", "straight") and same["max_abs_diff"] <= 1e-6 * 2
    assert same["steps_compared"] >= 3 and same["last_step"] == 60
    assert Path(train["stderr"]).name == "train.stderr.log" and Path(resume["stdout"]).name == "resume.stdout.log"

    assert failed["outcome"] == "failed"
    assert failed["reason"].startswith("resume/loss.resume_jump_max:"), failed["reason"]
    assert "at step 1 after" in failed["reason"]
    assert [s["outcome"] for s in failed["stages"]] == ["passed", "interrupted", "failed"]
    # Started again from step 1, the second stage is the straight run itself: parity passes, and
    # resume_jump_max is what catches a restart (the two checks go together).
    (restarted,) = failed["parity"]
    assert restarted["status"] == "passed" and restarted["first_step"] == 1, restarted
    assert "[FAIL] resume/loss.resume_jump_max: expected the first loss after resuming within 20%" in run.output
