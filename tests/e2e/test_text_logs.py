"""A trainer that prints its loss only as text, tested unchanged: each preset passes, fails fast on a
NaN while the run goes, and fails a loss bound; with `--key=value` overrides, a run stopped at a
step and resumed has its resume jump checked, and the report draws both stages on one chart."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ..conftest import REPO

pytestmark = pytest.mark.e2e

TRAINER = "tests/e2e/text_trainer.py"
PRESETS = ("nanogpt", "torchtitan", "megatron", "llmc")


def _spec(folder: Path, spec_id: str, fields: dict) -> str:
    base = {
        "id": spec_id,
        "command": ["{python}", TRAINER],
        "args_style": "equals",
        "gpus": 0,
        "cpu_ok": True,
        "timeout": 120,
        "min_steps_logged": 5,
    }
    if "stages" in fields:
        del base["command"]
    path = folder / f"{spec_id}.yaml"
    path.write_text(yaml.safe_dump({**base, **fields}, sort_keys=False))
    return str(path)


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_passes_fails_fast_on_nan_and_fails_a_loss_bound(harness, tmp_path: Path, preset: str) -> None:
    args = {"out_dir": "{output_dir}", "preset": preset, "max_iters": 30}
    log = {"format": preset}
    slow = {**args, "max_iters": 400, "sleep": 0.05, "nan_at": 7}
    specs = [
        _spec(tmp_path, "passes", {"args": args, "log": log, "loss": {"final_max": 1.5, "must_decrease": True}}),
        _spec(tmp_path, "nan", {"args": slow, "log": log, "loss": {"final_max": 1.5}}),
        _spec(tmp_path, "bound", {"args": args, "log": log, "loss": {"final_max": 0.5}}),
    ]
    run = harness("run", *specs)
    assert run.code == 1, run.output

    passed = run.spec("passes")
    assert passed["outcome"] == "passed", passed["reason"]
    assert passed["steps_logged"] == 30 and Path(passed["paths"]["log"]).name == "stdout.log"
    assert passed["final_loss"] == pytest.approx(1.0 + 4.0 * 2.718281828 ** (-30 / 12), abs=1e-3)

    nan = run.spec("nan")
    assert nan["outcome"] == "failed"
    assert nan["reason"].startswith("fail_fast: loss nan at step 7 in stdout.log"), nan["reason"]
    assert nan["steps_logged"] < 400  # stopped while it ran, not at its end

    bound = run.spec("bound")
    assert bound["outcome"] == "failed"
    assert bound["reason"].startswith("loss.final_max: 1.") and "at step 30" in bound["reason"], bound["reason"]


def test_text_trainer_with_equals_overrides_interrupted_and_resumed(harness, tmp_path: Path) -> None:
    def staged(spec_id: str, init_from: str) -> dict:
        common = {"out_dir": "{output_dir}", "max_iters": 60, "save_interval": 10, "sleep": 0.05}
        return {
            "stages": [
                {"id": "train", "command": ["{python}", TRAINER], "args": common, "interrupt_at_step": 25},
                {
                    "id": "resume",
                    "command": ["{python}", TRAINER],
                    "args": {**common, "init_from": init_from, "sleep": 0},
                    "loss": {"final_max": 1.5, "resume_jump_max": 0.2},
                    "metrics": {"val_loss": {"max": 5.0}},
                },
            ],
            # One log for every stage: nanoGPT's lines, each stage read from its own stdout.
            "log": {"format": "nanogpt"},
        }

    run = harness(
        "run",
        _spec(tmp_path, "resumes", staged("resumes", "resume")),
        _spec(tmp_path, "restarts", staged("restarts", "scratch")),
    )
    assert run.code == 1, run.output

    resumed = run.spec("resumes")
    assert resumed["outcome"] == "passed", resumed["reason"]
    train, resume = resumed["stages"]
    assert train["outcome"] == "interrupted" and Path(train["log"]).name == "train.stdout.log"
    assert "--max_iters=60" in train["command"] and "--init_from=resume" in resume["command"]
    assert Path(resume["log"]).name == "resume.stdout.log"
    assert resume["loss_curve"][0][0] in (21.0, 31.0)  # the iteration after the last state saved (every 10)
    jump = next(c for c in resume["checks"] if c["name"] == "loss.resume_jump_max")
    assert jump["passed"], jump

    restarted = run.spec("restarts")
    assert restarted["outcome"] == "failed"
    assert restarted["reason"].startswith("resume/loss.resume_jump_max:"), restarted["reason"]
    assert "at step 1 after" in restarted["reason"]

    page = (run.run_dir / "report.html").read_text()
    assert page.count('class="stage-boundary"') >= 2  # each staged spec's resume starts a stage on its chart
    assert "interrupted at step 25" in page and "val_loss" in page and "loss.final_max 1.5" in page


def test_the_bundled_text_log_spec_passes(harness) -> None:
    run = harness("run", str(REPO / "specs" / "tinylm_text_log.yaml"), "--fake-gpus", "1")
    assert run.code == 0, run.output
    record = run.spec("tinylm_text_log")
    assert Path(record["paths"]["log"]).name == "stdout.log" and record["steps_logged"] >= 6
