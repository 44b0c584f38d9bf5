"""One spec, from its loaded definition to its record, with no pytest in sight.

`run_spec` is the whole flow for one spec, retries included. Each attempt does, in order:
prepare the output dir (with a stand-in record, so an interrupted run still names the spec),
lease devices, launch through the backend while watchers follow the run, check what it left,
serve and score it (inference), compare with the baseline, mask secrets, and write the record.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from harness import backends
from harness.checks.after_run import CheckResult, failure_reason
from harness.checks.baseline import compare
from harness.checks.failure_kind import classify_run
from harness.checks.stderr import tail
from harness.context import RunContext
from harness.devices.leases import Lease
from harness.devices.memory import fit_problem, memory_request
from harness.inference.stage import run_inference
from harness.launch import CHILD_VERSIONS_FILE, Launch, placeholder_values
from harness.logs.formats import TrainingLog
from harness.planning import selection
from harness.process import ProcessOutcome
from harness.records import SpecResult, metric_curves, thin_curve
from harness.rundir import fresh_dir, remove_tree
from harness.runner.peaks import memory_check, sampling
from harness.runner.stages import chart_bounds, run_stages
from harness.secrets import Masker
from harness.spec.model import Spec
from harness.spec.parity import REPEAT_MARK
from harness.trace import read_child_versions

TAIL_LINES = 20


@dataclass
class SpecRun:
    """A spec's record and what a test runner shows of it (already masked)."""

    record: SpecResult
    failure: str | None = None  # the whole story of a failed run, None when it passed
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Attempt:
    record: SpecResult
    failed: list[CheckResult]
    warned: list[CheckResult]
    launch: Launch
    masker: Masker


def base_record(spec: Spec, context: RunContext, outcome: str, reason: str = "") -> SpecResult:
    return SpecResult(
        id=spec.id,
        outcome=outcome,  # type: ignore[arg-type]  # one of the Outcome literals, checked by its callers
        reason=reason,
        file=str(spec.source),
        tier=spec.effective_tier,
        device_kind=context.inventory.kind,
        output_dir=str(context.output_dir(spec.id)),
        versions=context.versions,
        started_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )


def skipped_record(spec: Spec, context: RunContext) -> SpecResult | None:
    """The record of a spec that cannot run with this run's devices, or None when it can."""
    reason = backends.skip_reason(spec, context.inventory) or fit_problem(
        spec, context.inventory, context.recorded_peaks, context.headroom
    )
    return base_record(spec, context, "skipped", reason) if reason else None


def unchanged_record(spec: Spec, context: RunContext) -> SpecResult | None:
    """With --skip-unchanged, the record of a spec whose last pass still holds; None when it must run."""
    if not context.values.get("skip_unchanged") or context.values.get("no_skip_unchanged"):
        return None
    reason = selection.reusable(spec, context)
    return base_record(spec, context, "unchanged", reason) if reason else None


def run_spec(spec: Spec, context: RunContext, *, priority: int = 0, expected: float | None = None) -> SpecRun:
    """Run the spec; with `retries: N`, run a failed one again up to N times while its failure is of a
    kind in `retry_on` (by default the machine's or time's), keeping every attempt. After an infra
    failure the next attempt prefers other devices than the ones that failed."""
    output_dir = context.output_dir(spec.id)
    earlier: list[dict] = []
    avoid: tuple[str, ...] = ()
    while True:
        attempt = _attempt(spec, context, output_dir, priority, spec.timeout if expected is None else expected, avoid)
        record = attempt.record
        if not attempt.failed or len(earlier) >= spec.retries:
            break
        if record.failure_kind not in spec.retry_on:
            record.warnings.append(
                f"not retried: a {record.failure_kind} failure (retry_on: {', '.join(spec.retry_on) or 'nothing'})"
            )
            break
        avoid = tuple(record.devices) if record.failure_kind == "infra" else ()
        # The failed attempt's outputs move aside (outside specs/, so only the last is gathered).
        kept = context.run_dir / "attempts" / spec.id / str(len(earlier) + 1)
        with contextlib.suppress(OSError):
            remove_tree(kept)
        kept.parent.mkdir(parents=True, exist_ok=True)
        output_dir.rename(kept)
        record.output_dir = str(kept)
        record.write(kept)
        earlier.append(_attempt_summary(record, len(earlier) + 1))
    if earlier:
        record.attempts = [*earlier, _attempt_summary(record, len(earlier) + 1)]
        record.flaky = not attempt.failed
        if record.flaky:
            record.warnings.append(recovered_line(earlier, record))
    record.dependencies = selection.record_run(spec, context, record, output_dir)
    record.write(output_dir)
    masker = attempt.masker
    failure = (
        failure_message(spec, attempt.failed, attempt.launch.stderr_path, output_dir, masker)
        if attempt.failed
        else None
    )
    return SpecRun(record, failure, [masker.text(f"{spec.id}: {check.line()}") for check in attempt.warned])


def _attempt(
    spec: Spec, context: RunContext, output_dir: Path, priority: int, expected: float, avoid: tuple[str, ...] = ()
) -> _Attempt:
    """One run of the spec, checked and masked."""
    fresh_dir(output_dir)
    record = base_record(spec, context, "passed")
    # Stands on disk until the run's own record replaces it: a harness interrupted mid-run
    # (Ctrl-C, a worker killed) still names the spec in results.json.
    base_record(
        spec,
        context,
        "error",
        "interrupted: the harness stopped before this run finished; nothing of it was left running",
    ).write(output_dir)
    lease = _lease(spec, context, priority, expected, avoid)
    devices = lease.devices if lease else ()
    try:
        placement = context.backend.place(spec, devices, context.inventory)
        # The server of an inference spec runs on the training's devices: its lease is held until that stops.
        release = lease.release if lease and spec.inference is None else lambda: None
        with sampling(context.inventory, devices, lease.attach if lease else None) as sampler:
            staged = run_stages(spec, context, output_dir, placement, sampler.on_start, release)
        launch, outcome, checks, log, masker = staged.launch, staged.outcome, staged.checks, staged.log, staged.masker
        record.stages = staged.stages
        record.bounds = chart_bounds(spec)
        record.parity = staged.comparisons
        record.peak_gpu_memory = sampler.peaks
        checks += memory_check(sampler.peaks, lease.memory if lease else None, spec.gpu_memory)
        if spec.inference is not None:
            # The spec's timeout bounds the whole spec: inference gets what the training left of it.
            left = spec.timeout - outcome.duration
            checks += _inference(spec, context, record, checks, launch, output_dir, placement.held, left)
    finally:
        if lease:
            lease.release()
    _fill(spec, record, outcome, launch, log, devices, lease)
    if context.baseline:
        then = context.baseline_records.get(spec.id)
        compared, record.regressions = compare(record, then, spec.baseline, context.tolerances)
        record.baseline_curve = then.loss_curve if then else []
        checks += compared
    record.checks = [c.as_dict() for c in checks]
    failed = [c for c in checks if not c.passed and c.severity == "fail"]
    warned = [c for c in checks if not c.passed and c.severity == "warn"]
    record.warnings += [c.line() for c in warned]
    if failed:
        record.outcome = "failed"
        record.reason = failure_reason(failed)
        verdict = classify_run(outcome, failed, launch.stderr_path)
        record.failure_kind, record.failure_evidence = verdict.kind, verdict.evidence
    return _Attempt(SpecResult.from_json(masker.data(record.to_json())), failed, warned, launch, masker)


def _lease(spec: Spec, context: RunContext, priority: int, expected: float, avoid: tuple[str, ...]) -> Lease | None:
    """Devices from the machine's pool, unless the backend's scheduler places the run; others than
    `avoid` when they are free."""
    if not spec.gpus or not context.backend.leases_devices:
        return None
    return context.pool.acquire(
        spec.gpus,
        spec.id,
        priority,
        expected,
        memory_request(spec, context.recorded_peaks, context.headroom),
        avoid=avoid + _repeats_devices(spec, context),
    )


def _repeats_devices(spec: Spec, context: RunContext) -> tuple[str, ...]:
    """The devices the spec's other repeats hold or ran on: a repeat takes others when they are free,
    so that `reproducible` compares devices too."""
    base = spec.id.split(REPEAT_MARK)[0]
    if spec.repeat < 2 and REPEAT_MARK not in spec.id:
        return ()

    def sibling(name: str) -> bool:
        return name != spec.id and name.split(REPEAT_MARK)[0] == base

    used = [d for d, holders in context.pool.holders().items() if any(sibling(h["name"]) for h in holders)]
    for path in (context.run_dir / "specs").glob(f"{base}*/result.json"):
        if sibling(path.parent.name):
            try:
                used += json.loads(path.read_text()).get("devices") or []
            except (OSError, ValueError, AttributeError):
                continue
    return tuple(dict.fromkeys(used))


def _fill(
    spec: Spec,
    record: SpecResult,
    outcome: ProcessOutcome,
    launch: Launch,
    log: TrainingLog | None,
    devices: tuple[str, ...],
    lease: Lease | None,
) -> None:
    """What the run showed, into its record."""
    record.duration = round(outcome.duration, 3)
    record.start_time = outcome.started
    record.devices = list(devices)
    record.placement = outcome.placement
    record.lease_wait = round(lease.waited, 3) if lease else 0.0
    record.command = launch.argv
    record.exit_code = outcome.exit_code
    record.paths.update(
        {
            "stdout": str(launch.stdout_path),
            "stderr": str(launch.stderr_path),
            **({"log": str(log.path)} if log else {}),
        }
    )
    record.stderr_tail = tail(launch.stderr_path, TAIL_LINES)
    record.child_versions = read_child_versions(launch.output_dir / CHILD_VERSIONS_FILE)
    if log is not None:
        record.steps_logged = len(log.entries)
        record.final_loss = (
            log.final.loss if log.final and log.final.loss is not None and math.isfinite(log.final.loss) else None
        )
        record.loss_curve = thin_curve(log.curve())
        record.metric_curves = metric_curves(log, skip=[key for key in (spec.log.loss_key, spec.log.step_key) if key])


def _inference(
    spec: Spec,
    context: RunContext,
    record: SpecResult,
    checks: list[CheckResult],
    launch: Launch,
    output_dir: Path,
    held: int,
    time_left: float,
) -> list[CheckResult]:
    if any(not c.passed and c.severity == "fail" for c in checks):
        record.warnings.append("inference stage not run: the training failed")
        return []
    values = placeholder_values(repo=context.repo, run_dir=context.run_dir, output_dir=output_dir, gpus=held)
    stage = run_inference(
        spec,
        output_dir=output_dir,
        cwd=launch.cwd,
        env=launch.env,
        values=values,
        scorer=context.scorer,
        missing_scorer=context.missing_scorer,
        time_left=time_left,
    )
    record.perplexity = stage.worst_perplexity
    record.inference = stage.as_records()
    if stage.server_stderr:
        record.paths["server_stderr"] = str(stage.server_stderr)
    if stage.skipped:
        record.warnings.append(f"inference stage skipped: {stage.skipped}")
    return stage.checks


def _attempt_summary(record: SpecResult, number: int) -> dict:
    return {
        "attempt": number,
        "outcome": record.outcome,
        "reason": record.reason,
        "duration": record.duration,
        "output_dir": record.output_dir,
        "devices": record.devices,
        "failure_kind": record.failure_kind,
        "failure_evidence": record.failure_evidence,
    }


def ended_early(
    spec: Spec, context: RunContext, since: str, reason: str | None = None, *, machine: bool = False
) -> SpecResult:
    """The record of a spec whose run was cut short (the harness interrupted, its worker signalled, a full
    disk): its stand-in (or `reason`) with the failed attempts it had already moved aside, written in its
    output dir where the disk still allows. `machine`: a failure of the machine (`infra`), not an error."""
    output_dir = context.output_dir(spec.id)
    try:
        record = SpecResult.from_json(json.loads((output_dir / "result.json").read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        record = base_record(spec, context, "error")
    if reason is not None:
        record.outcome, record.reason = ("failed" if machine else "error"), reason
        if machine:
            record.failure_kind, record.failure_evidence = "infra", f"the machine: {reason}"
        else:
            # The harness's own worker was stopped under the run: nothing the spec did.
            record.failure_kind, record.failure_evidence = (
                "harness",
                f"the worker running the spec was stopped: {reason}",
            )
    kept = []
    for folder in (context.run_dir / "attempts" / spec.id).glob("*"):
        try:
            earlier = SpecResult.from_json(json.loads((folder / "result.json").read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            continue
        # A reused run dir may hold an earlier run's attempts of the same spec.
        if folder.name.isdigit() and earlier.started_at >= since:
            kept.append(_attempt_summary(earlier, int(folder.name)))
    if kept:
        kept.sort(key=lambda attempt: attempt["attempt"])
        record.attempts = [*kept, _attempt_summary(record, len(kept) + 1)]
    try:
        record.write(output_dir)
    except OSError:
        pass  # a full disk: the record still reaches results.json through the test report
    return record


def recovered_line(earlier: list[dict], record: SpecResult) -> str:
    """The warning of a spec that passed on a retry, naming the kind it recovered from: a numeric
    failure that a rerun passed is news of its own (the numbers differ from run to run), never a plain flaky."""
    kinds = list(dict.fromkeys(str(a["failure_kind"]) for a in earlier))
    first = earlier[0]
    moved = (
        f" on {','.join(record.devices)} (attempt 1 on {','.join(first['devices'])})"
        if record.devices and record.devices != first["devices"]
        else ""
    )
    what = "numeric flaky" if "numeric" in kinds else f"{'/'.join(kinds)} retry"
    return (
        f"{what}: passed on attempt {len(earlier) + 1}{moved} after {len(earlier)} failed"
        f" ({first['failure_kind']}: {first['reason']})"
    )


def failure_message(spec: Spec, failed: list[CheckResult], stderr_path: Path, output_dir: Path, masker: Masker) -> str:
    """What a test runner prints (and junit.xml keeps) for a failed spec; the child's stderr may echo a secret."""
    lines = [f"spec {spec.id} ({spec.source}) failed {len(failed)} check{'s' if len(failed) != 1 else ''}:"]
    lines += [f"  {check.line()}" for check in failed]
    stderr_tail = tail(stderr_path, TAIL_LINES)
    if stderr_tail:
        lines.append(f"stderr tail ({stderr_path}):")
        lines += [f"  | {line}" for line in stderr_tail.splitlines()]
    else:
        lines.append(f"stderr: empty ({stderr_path})")
    lines.append(f"outputs and logs: {output_dir}")
    return masker.text("\n".join(lines))
