"""The bundled specs on the bundled example, and the example broken on purpose."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ..conftest import REPO, forgather_on_path

pytestmark = pytest.mark.e2e


def git_status() -> str:
    """Changes anywhere, and ignored files too where runs could leave them (the project's tree)."""
    everything = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    ignored = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--", "examples", "specs"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout
    return everything + ignored


@pytest.fixture
def tree_unchanged():
    """Nothing a run does may show up in the repository, ignored files included."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    before = git_status()
    yield
    assert git_status() == before


def test_smoke_tier_passes(harness, tree_unchanged) -> None:
    run = harness("run", "--tier", "smoke")
    assert run.code == 0, run.output
    (spec,) = run.results["specs"]
    assert spec["id"] == "tinylm_smoke" and spec["outcome"] == "passed"
    assert spec["steps_logged"] >= 6 and spec["final_loss"] < 1.6
    assert run.results["versions"]["torch"].startswith("2.")
    assert (run.run_dir / "junit.xml").read_text().count("<testcase") == 1
    assert Path(spec["paths"]["log"]).name == "train_log.jsonl"
    assert spec["child_versions"]["torch"] == run.results["versions"]["torch"] or spec["child_versions"][
        "torch"
    ].startswith(run.results["versions"]["torch"])
    assert "tinylm_smoke" in (run.run_dir / "report.html").read_text()


def test_a_regression_against_a_baseline_fails_and_is_reported(harness, tmp_path: Path) -> None:
    first = harness("run", "--tier", "smoke")
    assert first.code == 0, first.output
    baseline = first.results
    baseline["specs"][0]["final_loss"] *= 0.5  # as if the loss used to end much lower
    (tmp_path / "baseline.json").write_text(json.dumps(baseline))
    second = harness(
        "run", "--tier", "smoke", "--baseline", str(tmp_path / "baseline.json"), "--tolerance", "duration=100"
    )
    assert second.code == 1, second.output
    spec = second.spec("tinylm_smoke")
    assert spec["reason"].startswith("baseline.final_loss: ")
    assert [r["metric"] for r in spec["regressions"]] == ["final_loss"]
    markdown = harness("report", str(tmp_path / "baseline.json"), str(second.run_dir))
    assert markdown.code == 0 and "final_loss" in markdown.proc.stdout


def test_full_tier_on_two_fake_devices(harness, tinylm_scorer: str, tree_unchanged) -> None:
    """Every bundled spec, the 2-rank torchrun, Trainer and inference ones included."""
    run = harness("run", "--fake-gpus", "2", "--scorer", tinylm_scorer)
    assert run.code == 0, run.output
    specs = {s["id"]: s for s in run.results["specs"]}
    assert {s["outcome"] for s in specs.values()} == {"passed"}, {k: v["reason"] for k, v in specs.items()}
    assert sorted(specs["tinylm_ddp"]["devices"]) == ["0", "1"]
    assert Path(specs["tinylm_hf_trainer"]["paths"]["log"]).name == "trainer_state.json"
    assert Path(specs["tinylm_forgather_log"]["paths"]["log"]).name == "trainer_logs.json"
    assert [c["prompt"] for c in specs["tinylm_inference"]["inference"]] == ["the small cat", "a happy dog"]
    assert specs["tinylm_inference"]["perplexity"] <= 10


def broken_copy(tmp_path: Path, spec_id: str, **args) -> Path:
    spec = yaml.safe_load((REPO / "specs" / "tinylm_smoke.yaml").read_text())
    spec["id"] = spec_id
    spec["args"].update(args)
    (tmp_path / f"{spec_id}.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path


def test_broken_example_fails_the_right_check(harness, tmp_path: Path, tree_unchanged) -> None:
    specs = tmp_path / "broken"
    specs.mkdir()
    broken_copy(specs, "huge_lr", lr=1000.0)
    broken_copy(specs, "crashes", fail_at_step=25)
    broken_copy(specs, "log_stops_early", stop_logging_at=20)
    run = harness("run", "--specs", str(specs), "--fake-gpus", "2")
    assert run.code == 1, run.output
    by_id = {s["id"]: s for s in run.results["specs"]}
    assert all(s["outcome"] == "failed" for s in by_id.values())

    failed = {sid: {c["name"] for c in s["checks"] if not c["passed"]} for sid, s in by_id.items()}
    assert {"exit_code", "stderr.forbidden_patterns"} <= failed["crashes"]
    assert failed["log_stops_early"] == {"min_steps_logged"}
    assert {"loss.no_nan", "loss.final_max", "loss.must_decrease"} <= failed["huge_lr"]
    # The terminal message names the check, the expectation, what was found, and the stderr tail.
    assert "[FAIL] exit_code: expected exit code 0; found exit code 1" in run.output
    assert "injected failure at step 25" in run.output
    assert "[FAIL] min_steps_logged: expected at least 6 entries with 'loss'; found 3 in train_log.jsonl" in run.output
    assert "then: loss.no_nan: nan at step 10" in run.output
    assert "stderr tail (" in run.output and "outputs and logs:" in run.output


def test_forgather_profile_with_stand_in_command(harness, tmp_path: Path) -> None:
    """A Forgather spec file, unchanged, run through a stand-in `forgather` on PATH."""
    bin_dir = forgather_on_path(tmp_path)
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "train.yaml").write_text("lr: 0.001\n")
    specs = tmp_path / "specs"
    specs.mkdir()
    shutil.copy(Path(__file__).with_name("forgather_spec.yaml"), specs / "forgather_spec.yaml")
    # One GPU named by the caller: --gpus needs a visible device, and this machine may have none.
    run = harness(
        "run", "--gpus", "1", cwd=tmp_path, env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": "0"}
    )
    assert run.code == 0, run.output
    (spec,) = run.results["specs"]
    assert spec["id"] == "tiny_stand_in" and spec["steps_logged"] == 6 and spec["final_loss"] == pytest.approx(1.0)
