"""A spec's runs, in stages: train, stop it at a step as a preemption would, resume, finalize.

A spec with one `command` is a single stage whose files keep their plain names. A spec with
`stages:` runs them in order, in one output dir, on the devices its attempt leased; each
stage is launched and checked as a spec of its own (its command, args, env, timeout,
launcher, log, loss, metrics, stderr, files), with its own stdout/stderr. The first stage
that fails ends the spec. A stage with `interrupt_at_step` is stopped (SIGTERM to its process
group, SIGKILL after a grace) once its log shows that step; stopped so, it has done what was
planned. The forgather profile adds a finalize stage when the spec asks to quantize.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.checks.after_run import CheckResult, check_resume_jump, failed_checks_line, run_checks
from harness.checks.fail_fast import StepWatcher, fail_fast_watchers
from harness.checks.parity import stage_parity
from harness.context import RunContext
from harness.inference import forgather
from harness.launch import Launch, Placement, build_launch
from harness.logs.formats import TrainingLog
from harness.process import ProcessOutcome
from harness.records import metric_curves, thin_curve
from harness.runner.session_hint import with_session_hint
from harness.secrets import Masker, masker_for
from harness.spec.model import Spec
from harness.spec.sections import LogSpec, StageSpec

# A stage built once the stages before it have run (finalize reads where training left the model).
StageFactory = Callable[[Path], StageSpec]


@dataclass
class StagedRun:
    """What a spec's stages did: the last stage that ran (the failing one, if any) and every check."""

    launch: Launch
    outcome: ProcessOutcome
    checks: list[CheckResult]
    log: TrainingLog | None
    masker: Masker
    stages: list[dict[str, Any]] = field(default_factory=list)
    # Stage parity comparisons (harness.checks.parity.Comparison.as_dict), for the record's `parity`.
    comparisons: list[dict[str, Any]] = field(default_factory=list)


def spec_stages(spec: Spec) -> list[StageSpec | StageFactory] | None:
    """The stages of a spec, or None for a spec that is one command."""
    if spec.stages is not None:
        return list(spec.stages)
    if spec.profile == "forgather" and spec.finalize is not None:
        train = StageSpec(
            id="train",
            command=[],
            log=spec.log,
            loss=spec.loss,
            metrics=spec.metrics,
            stderr=spec.stderr,
            expected_files=spec.expected_files,
            min_steps_logged=spec.min_steps_logged,
        )
        return [train, lambda output_dir: forgather.finalize_stage(spec, output_dir)]
    return None


def stage_spec(spec: Spec, stage: StageSpec) -> Spec:
    """The stage as a spec of its own; what a stage leaves out comes from the spec. A stage with
    no command is the spec's own run (the forgather profile's training)."""
    if not stage.command:
        return replace(spec, stages=None, inference=None, finalize=None)
    return replace(
        spec,
        command=stage.command,
        args=stage.args,
        args_style=stage.args_style or spec.args_style,
        env={**spec.env, **stage.env},
        timeout=stage.timeout or spec.timeout,
        launcher=stage.launcher or spec.launcher,
        log=stage.log or spec.log,
        loss=stage.loss,
        metrics=stage.metrics,
        stderr=stage.stderr or spec.stderr,
        expected_files=stage.expected_files,
        min_steps_logged=stage.min_steps_logged,
        stages=None,
        inference=None,
        finalize=None,
        profile="command",
        project_dir=None,
        config=None,
    )


def run_stages(
    spec: Spec,
    context: RunContext,
    output_dir: Path,
    placement: Placement,
    on_start: Callable[[int], None] | None,
    on_last_exit: Callable[[], None] = lambda: None,
) -> StagedRun:
    """Run the spec's command, or its stages in order until one fails. `on_last_exit` is called once the
    last stage's processes have ended, before its checks: the devices can go to the next spec meanwhile."""
    stages = spec_stages(spec)
    if stages is None:
        launch, outcome, checks, log = _run_one(spec, context, output_dir, placement, on_start, "", None, on_last_exit)
        return StagedRun(launch, outcome, checks, log, _masker([launch]))
    launches: list[Launch] = []
    records: list[dict[str, Any]] = []
    all_checks: list[CheckResult] = []
    before: TrainingLog | None = None
    logs: dict[str, tuple[Path | None, LogSpec]] = {}
    comparisons: list[dict[str, Any]] = []
    duration, started = 0.0, 0.0
    for index, planned_stage in enumerate(stages):
        stage = planned_stage if isinstance(planned_stage, StageSpec) else planned_stage(output_dir)
        last = index == len(stages) - 1
        launch, outcome, checks, log = _run_one(
            stage_spec(spec, stage),
            context,
            output_dir,
            placement,
            on_start,
            stage.id,
            stage.interrupt_at_step,
            on_last_exit if last else lambda: None,
        )
        if index and stage.loss is not None and stage.loss.resume_jump_max is not None:
            checks.append(check_resume_jump(stage.id, stage.loss.resume_jump_max, before, log))
        logs[stage.id] = (log.path if log is not None else None, stage.log or spec.log)
        if stage.parity is not None and stage.parity.stage in logs:
            comparison = stage_parity(stage.id, stage.parity, logs[stage.id], logs[stage.parity.stage])
            checks.append(comparison.check())
            comparisons.append(comparison.as_dict())
        launches.append(launch)
        duration += outcome.duration
        started = started or outcome.started
        failed = any(not c.passed and c.severity == "fail" for c in checks)
        records.append(_stage_record(stage, launch, outcome, checks, log, failed))
        all_checks += [replace(c, name=f"{stage.id}/{c.name}") for c in checks]
        before = log
        if failed:
            records += [
                {"id": s.id if isinstance(s, StageSpec) else "finalize", "outcome": "not run"}
                for s in stages[index + 1 :]
            ]
            break
    return StagedRun(
        launch,
        replace(outcome, duration=duration, started=started),
        all_checks,
        log,
        _masker(launches),
        records,
        comparisons,
    )


def _run_one(
    spec: Spec,
    context: RunContext,
    output_dir: Path,
    placement: Placement,
    on_start: Callable[[int], None] | None,
    stage: str,
    interrupt_at: int | None,
    on_exit: Callable[[], None],
) -> tuple[Launch, ProcessOutcome, list[CheckResult], TrainingLog | None]:
    launch = replace(
        build_launch(spec, repo=context.repo, run_dir=context.run_dir, output_dir=output_dir, placement=placement),
        stage=stage,
    )
    # A text log on stdout or stderr is this run's own stream (a stage's file is named after it).
    spec = replace(spec, log=spec.log.on_streams(launch.stdout_path.name, launch.stderr_path.name))
    write_launch(launch, _masker([launch]))
    watchers = fail_fast_watchers(spec, output_dir, launch.stderr_path)
    interrupt = StepWatcher(output_dir, spec.log, interrupt_at) if interrupt_at is not None else None
    outcome = context.backend.run(launch, [*watchers, *([interrupt] if interrupt else [])], on_start=on_start)
    on_exit()
    if outcome.signal is not None and context.interrupted_marker.exists():
        # The controller's clean-up killed it (SIGINT reached the controller alone): the
        # spec was interrupted, as its stand-in record already says, not failed.
        raise KeyboardInterrupt
    if interrupt is None:
        checks, log = run_checks(spec, outcome, output_dir, launch.stderr_path, launch.stdout_path)
        return launch, outcome, with_session_hint(checks, spec.effective_tier, context.repo), log
    planned_stop = interrupt.reached is not None and outcome.stopped_by == interrupt.poll()
    # A stage stopped as planned is judged on what it logged, as a run that ended well.
    judged = replace(outcome, exit_code=0, signal=None, stopped_by=None) if planned_stop else outcome
    checks, log = run_checks(spec, judged, output_dir, launch.stderr_path, launch.stdout_path)
    checks = with_session_hint(checks, spec.effective_tier, context.repo)
    if planned_stop:
        checks[0] = CheckResult(
            "interrupt_at_step", True, f"stopped once the log shows step {interrupt_at}", str(outcome.stopped_by)
        )
    elif checks[0].passed:
        checks[0] = CheckResult(
            "interrupt_at_step",
            False,
            f"the log to reach step {interrupt_at} before the stage ends",
            f"it ended first ({outcome.describe()})",
        )
    return launch, outcome, checks, log


def _stage_record(
    stage: StageSpec,
    launch: Launch,
    outcome: ProcessOutcome,
    checks: list[CheckResult],
    log: TrainingLog | None,
    failed: bool,
) -> dict[str, Any]:
    interrupted = bool(checks) and checks[0].name == "interrupt_at_step" and checks[0].passed
    entries = log.entries if log is not None else []
    curves = {
        "loss_curve": thin_curve(log.curve()) if log is not None else [],
        "metric_curves": metric_curves(log, skip=[k for k in (log.loss_key, log.step_key) if k]) if log else {},
    }
    return {
        "id": stage.id,
        "outcome": "failed" if failed else "interrupted" if interrupted else "passed",
        "reason": failed_checks_line([c for c in checks if not c.passed and c.severity == "fail"]),
        "duration": round(outcome.duration, 3),
        "exit_code": outcome.exit_code,
        "command": launch.argv,
        "stdout": str(launch.stdout_path),
        "stderr": str(launch.stderr_path),
        "log": str(log.path) if log is not None else None,
        "steps_logged": len(entries),
        "first_loss": entries[0].loss if entries else None,
        "final_loss": log.final.loss if log is not None and log.final else None,
        "checks": [c.as_dict() for c in checks],
        **curves,
        # The step the log showed when the planned interrupt stopped the stage (the report marks it).
        "interrupted_at": reached_step(checks[0].found) if interrupted else None,
    }


def reached_step(found: str) -> float | None:
    """The step an interrupt check says the log showed."""
    match = re.search(r"the log showed step (\S+) ", found)
    return float(match.group(1)) if match else None


def chart_bounds(spec: Spec) -> dict[str, list[float | None]]:
    """The bounds a spec's checks (and its stages') put on the final loss and on its metrics, [min, max] by key."""
    bounds: dict[str, list[float | None]] = {}
    for loss, metrics in [(spec.loss, spec.metrics), *((s.loss, s.metrics) for s in spec.stages or ())]:
        if loss is not None and (loss.final_min is not None or loss.final_max is not None):
            bounds["loss"] = [loss.final_min, loss.final_max]
        bounds.update({key: [bound.min, bound.max] for key, bound in metrics.items()})
    return bounds


def _masker(launches: list[Launch]) -> Masker:
    return masker_for(*(launch.env for launch in launches))


def write_launch(launch: Launch, masker: Masker) -> None:
    """What ran, so a person can run it again by hand (giving any masked secret again)."""
    changed = {k: v for k, v in launch.env.items() if os.environ.get(k) != v}
    document = {"argv": launch.argv, "cwd": str(launch.cwd), "env": changed, "timeout": launch.timeout}
    name = f"{launch.stage}.launch.json" if launch.stage else "launch.json"
    (launch.output_dir / name).write_text(json.dumps(masker.data(document), indent=2))
