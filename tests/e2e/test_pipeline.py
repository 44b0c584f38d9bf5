"""`runner.pipeline.run_spec` called directly, with no pytest plugin: one spec from definition to record
on simulated devices, through the run's one setup (`context.create`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.context import create
from harness.rundir import release
from harness.runner.pipeline import run_spec
from harness.spec.files import spec_from_mapping

pytestmark = pytest.mark.e2e

REPORT = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1] + '/env.json', 'w')); print('loss 1.0')"


def spec(spec_id: str, gpus: int, code: str = REPORT, **fields):
    return spec_from_mapping(
        {
            "id": spec_id,
            "command": ["{python}", "-c", code, "{output_dir}"],
            "gpus": gpus,
            "cpu_ok": True,
            "timeout": 60,
            "min_steps_logged": 0,
            **fields,
        },
        Path(f"{spec_id}.yaml"),
    )


@pytest.fixture
def context(tmp_path: Path):
    made = create({"fake_gpus": 3, "run_dir": str(tmp_path / "run")}, tmp_path, [])
    yield made
    release(made.run_dir)


def test_a_spec_runs_on_its_leased_simulated_devices_and_writes_its_record(context) -> None:
    run = run_spec(spec("pair", 2), context)
    assert run.failure is None, run.failure
    record = run.record
    assert record.outcome == "passed" and record.device_kind == "fake" and len(set(record.devices)) == 2
    env = json.loads((context.output_dir("pair") / "env.json").read_text())
    assert env["CUDA_VISIBLE_DEVICES"] == ",".join(record.devices)
    on_disk = json.loads((context.output_dir("pair") / "result.json").read_text())
    assert on_disk["id"] == "pair" and on_disk["outcome"] == "passed"
    assert context.pool.holders() == {}, "the lease outlived the run"


def test_a_failed_run_says_why_and_a_retry_keeps_both_attempts(context) -> None:
    run = run_spec(spec("broken", 1, "import sys; sys.exit(3)", retries=1, retry_on=["code"]), context)
    assert run.record.outcome == "failed" and "exit code 3" in (run.failure or "")
    assert [a["outcome"] for a in run.record.attempts] == ["failed", "failed"]
    assert (context.run_dir / "attempts" / "broken" / "1" / "result.json").is_file()
    assert context.pool.holders() == {}


def staged(spec_id: str, gpus: int, stage_ids: list[str]):
    command = ["{python}", "-c", REPORT, "{output_dir}"]
    stages = [{"id": stage_id, "command": command, "min_steps_logged": 0} for stage_id in stage_ids]
    fields = {"id": spec_id, "stages": stages, "gpus": gpus, "cpu_ok": True, "timeout": 60, "min_steps_logged": 0}
    return spec_from_mapping(fields, Path(f"{spec_id}.yaml"))


@pytest.mark.parametrize("stage_ids", [None, ["first", "last"]], ids=["one command", "stages"])
def test_the_devices_go_back_once_the_last_process_ends_before_its_checks(context, monkeypatch, stage_ids) -> None:
    """The next spec may start on the devices while this one's log is still being checked."""
    from harness.runner import stages

    held_during_checks: list[bool] = []
    checks = stages.run_checks

    def checks_seeing_the_pool(*args, **kwargs):
        held_during_checks.append(bool(context.pool.holders()))
        return checks(*args, **kwargs)

    monkeypatch.setattr(stages, "run_checks", checks_seeing_the_pool)
    run = run_spec(staged("early", 2, stage_ids) if stage_ids else spec("early", 2), context)
    assert run.failure is None, run.failure
    # A stage before the last is checked on its devices (the next stage needs them); the last is not.
    assert held_during_checks == ([True, False] if stage_ids else [False])
    assert context.pool.holders() == {}
