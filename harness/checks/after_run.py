"""The checks a run is held to, each saying what was expected and what was found.

Only what a spec asks for is checked: with no `loss` block, `min_steps_logged: 0` and no
`expected_files`, a run needs no training log at all, so any command can be a spec.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, cast

from harness.checks.stderr import root_error, scan_file
from harness.logs.formats import SEARCH_ORDER, LogEntry, LogError, TrainingLog, find_log, log_globs, parse_log
from harness.logs.sniff import sniff
from harness.logs.store import logged_form
from harness.process import ProcessOutcome
from harness.records import CheckRecord
from harness.rundir import restore_dir, stream_problem
from harness.spec.globs import find
from harness.spec.model import Spec
from harness.terminal import visible


@dataclass(frozen=True)
class CheckResult:
    """One check. `cause`: the exception behind a failed run, from its stderr. `notes`: what else
    went wrong only because of this failure (the checks a stopped run could not pass), shown
    under it; those checks themselves stay in the record with severity "info"."""

    name: str
    passed: bool
    expected: str
    found: str
    severity: Literal["fail", "warn", "info"] = "fail"
    cause: str | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # What a check found may quote the run (a stderr line, a process name): never its terminal controls.
        object.__setattr__(self, "found", visible(self.found))
        if self.cause is not None:
            object.__setattr__(self, "cause", visible(self.cause))

    def line(self) -> str:
        mark = "ok" if self.passed else {"warn": "WARN", "info": "info"}.get(self.severity, "FAIL")
        under = ([f"root error: {self.cause}"] if self.cause else []) + [f"then: {note}" for note in self.notes]
        return "\n    ".join([f"[{mark}] {self.name}: expected {self.expected}; found {self.found}", *under])

    def as_dict(self) -> CheckRecord:
        return cast(CheckRecord, asdict(self))


def _fmt(value: float | None) -> str:
    if value is None:
        return "nothing"
    return f"{value:.4g}"


def check_exit(outcome: ProcessOutcome) -> CheckResult:
    """How the run ended. One that fail-fast stopped has no exit code of its own to judge:
    what stopped it is the finding (the only watchers a spec run has are fail-fast's)."""
    if outcome.stopped_by:
        return CheckResult(
            "fail_fast",
            False,
            "no forbidden stderr pattern and no NaN, inf or missing loss while it runs",
            f"{outcome.stopped_by}; the run was stopped there",
        )
    # A scheduler that ended the job decides even over exit code 0: srun exits 0 on a node failure.
    ended_well = outcome.exit_code == 0 and not outcome.timed_out and not outcome.scheduler_reason
    return CheckResult("exit_code", ended_well, "exit code 0", outcome.describe())


def check_leftovers(outcome: ProcessOutcome) -> list[CheckResult]:
    if not outcome.leftovers:
        return []
    return [
        CheckResult(
            "processes",
            False,
            "no process left when the command exits",
            f"{len(outcome.leftovers)} left running and killed: {', '.join(outcome.leftovers[:5])}",
        )
    ]


def check_stderr(spec: Spec, stderr_path: Path) -> list[CheckResult]:
    forbidden, warn = spec.stderr.forbidden_patterns, spec.stderr.warn_patterns
    hits = scan_file(stderr_path, [*forbidden, *warn])
    results = []
    for pattern in forbidden:
        hit = hits.get(pattern)
        results.append(
            CheckResult(
                "stderr.forbidden_patterns",
                hit is None,
                f"no {pattern!r} in stderr",
                f"line {hit[0]}: {hit[1]}" if hit else "none",
            )
        )
    for pattern in warn:
        if pattern in hits:
            line, text = hits[pattern]
            results.append(
                CheckResult("stderr.warn_patterns", False, f"no {pattern!r} in stderr", f"line {line}: {text}", "warn")
            )
    return results


def check_files(spec: Spec, output_dir: Path) -> list[CheckResult]:
    results = []
    for pattern in spec.expected_files or ():
        found = [p for p in find(output_dir, pattern if "/" in pattern else f"**/{pattern}") if p.exists()]
        results.append(
            CheckResult(
                "expected_files",
                bool(found),
                f"a file matching {pattern!r} in the output dir",
                str(found[0].relative_to(output_dir)) if found else f"no file matches {pattern!r}",
            )
        )
    return results


def read_log(spec: Spec, output_dir: Path, streams: Sequence[Path] = ()) -> tuple[TrainingLog | None, str | None]:
    """The parsed training log, or why there is none: the files and formats tried and, when the run's
    stdout or stderr prints a loss as text, the `log:` that would read it."""
    path = find_log(output_dir, spec.log)
    if path is None:
        formats = spec.log.format if spec.log.format != "auto" else ", ".join(dict.fromkeys(f for _, f in SEARCH_ORDER))
        problem = (
            f"no training log ({', '.join(map(repr, log_globs(spec.log)))}; formats tried: {formats}) in {output_dir}"
        )
        return None, problem + _sniffed(streams)
    try:
        return parse_log(path, spec.log, tuple(spec.metrics)), None
    except LogError as error:
        return None, f"{path}: {error}" + _sniffed([path, *streams])


def _sniffed(paths: Sequence[Path]) -> str:
    """The first of `paths` that prints a loss as text, as a `log:` that reads it; "" when none does."""
    for path in dict.fromkeys(paths):
        if path.is_file() and (hint := sniff(path).suggestion()):
            return f"; {hint}"
    return ""


def check_log(spec: Spec, log: TrainingLog | None, log_problem: str | None) -> list[CheckResult]:
    if not spec.needs_log:
        return []
    if log is None:
        return [CheckResult("log", False, "a readable training log", log_problem or "none")]
    counted = f"{len(log.entries)} in {log.path.name}" + (f" ({'; '.join(log.notes)})" if log.notes else "")
    results = [
        CheckResult(
            "min_steps_logged",
            len(log.entries) >= spec.min_steps_logged,
            f"at least {spec.min_steps_logged} entries with {spec.log.loss_key!r}",
            counted,
        )
    ]
    if spec.loss is not None:
        results += check_loss(spec, log)
    for key, bound in spec.metrics.items():
        results.append(check_metric(key, bound, log))
    return results


def check_loss(spec: Spec, log: TrainingLog) -> list[CheckResult]:
    loss = spec.loss
    assert loss is not None
    results = []
    if loss.no_nan:
        bad = first_bad_loss([log.first_bad] if log.first_bad else [])
        results.append(
            CheckResult("loss.no_nan", bad is None, "every logged loss a finite number", bad or "all finite")
        )
    final = log.final
    final_loss = final.loss if final else None
    where = f" at step {_step(final.step)}" if final else ""
    if loss.final_max is not None:
        ok = final_loss is not None and final_loss <= loss.final_max
        results.append(
            CheckResult("loss.final_max", ok, f"final loss <= {loss.final_max:g}", f"{_fmt(final_loss)}{where}")
        )
    if loss.final_min is not None:
        ok = final_loss is not None and final_loss >= loss.final_min
        results.append(
            CheckResult("loss.final_min", ok, f"final loss >= {loss.final_min:g}", f"{_fmt(final_loss)}{where}")
        )
    if loss.must_decrease:
        first = log.entries[0].loss if log.entries else None
        ok = first is not None and final_loss is not None and final_loss < first
        results.append(
            CheckResult(
                "loss.must_decrease",
                ok,
                "final loss below the first logged loss",
                f"first {_fmt(first)}, final {_fmt(final_loss)}",
            )
        )
    return results


def check_resume_jump(stage: str, bound: float, before: TrainingLog | None, after: TrainingLog | None) -> CheckResult:
    """A resumed run goes on from where the run before it stopped: its first logged loss lies near
    the last one logged before (a resume that lost its optimizer state or restarted from step 1
    jumps back towards the initial loss)."""
    last = before.final if before is not None else None
    first = after.entries[0] if after is not None and after.entries else None
    expected = f"the first loss after resuming within {bound:g} of the last loss the stage before logged"
    if last is None or last.loss is None or first is None or first.loss is None:
        missing = (
            "the stage before logged no loss" if last is None or last.loss is None else f"stage {stage} logged no loss"
        )
        return CheckResult("loss.resume_jump_max", False, expected, missing)
    jump = abs(first.loss - last.loss) / abs(last.loss) if last.loss else math.inf
    found = (
        f"{_fmt(first.loss)} at step {_step(first.step)} after {_fmt(last.loss)} at step {_step(last.step)}: a "
        f"jump of {jump:.0%}"
    )
    return CheckResult("loss.resume_jump_max", jump <= bound, expected.replace(f"{bound:g}", f"{bound:.0%}"), found)


def first_bad_loss(entries: Iterable[LogEntry]) -> str | None:
    """The first NaN, infinite or missing loss and its step, as the no_nan check and fail-fast report it."""
    bad = next((e for e in entries if not e.finite), None)
    return None if bad is None else f"{logged_form(bad.raw_loss)} at step {_step(bad.step)}"


def _step(step: float | None) -> str:
    return "?" if step is None else f"{step:g}"


def check_metric(key: str, bound, log: TrainingLog) -> CheckResult:
    values = log.values(key)
    name = f"metrics.{key}"
    limits = " and ".join(
        part
        for part in (
            f">= {bound.min:g}" if bound.min is not None else "",
            f"<= {bound.max:g}" if bound.max is not None else "",
        )
        if part
    )
    if not values:
        return CheckResult(name, False, f"{key} logged", "no values")
    checked: Sequence[float]
    if bound.at == "final":
        checked, what = [values[-1]], "final"
    elif bound.at == "mean":
        checked, what = [statistics.fmean(values)], "mean"
    else:
        checked, what = values, "every"
    worst = next(
        (
            v
            for v in checked
            if not math.isfinite(v)
            or (bound.min is not None and v < bound.min)
            or (bound.max is not None and v > bound.max)
        ),
        None,
    )
    found = (
        f"{what} {key} within bounds (last {_fmt(values[-1])})" if worst is None else f"{what} {key} = {_fmt(worst)}"
    )
    return CheckResult(name, worst is None, f"{what} {key} {limits}", found)


def failed_checks_line(failed: list[CheckResult]) -> str:
    """Each failed check, by name, with the first line of what it found."""
    return "; ".join(f"{c.name}: {c.found.splitlines()[0]}" for c in failed)


def failure_reason(failed: list[CheckResult]) -> str:
    """The record's one-line reason for a failed run: the root error when stderr shows one, then each failed check, by
    name."""
    checks = failed_checks_line(failed)
    cause = next((c.cause for c in failed if c.cause), None)
    return f"{cause} ({checks})" if cause else checks


def run_checks(
    spec: Spec, outcome: ProcessOutcome, output_dir: Path, stderr_path: Path, stdout_path: Path | None = None
) -> tuple[list[CheckResult], TrainingLog | None]:
    """Every check the spec asks for, in the order a person reads them."""
    streams = [p for p in (stdout_path, stderr_path) if p is not None]
    # First: a folder the run put a file in place of must be a folder again before anything reads it.
    damage = [found for found in (restore_dir(output_dir), *map(stream_problem, streams)) if found]
    log, problem = read_log(spec, output_dir, streams) if spec.needs_log or output_dir.exists() else (None, None)
    results = [
        check_exit(outcome),
        *check_leftovers(outcome),
        *(
            CheckResult("outputs", False, "the output dir and its stream files as the harness made them", d)
            for d in damage
        ),
        *check_stderr(spec, stderr_path),
        *check_files(spec, output_dir),
        *check_log(spec, log, problem),
    ]
    return under_the_stop(with_root_error(results, outcome, stderr_path)), log


def under_the_stop(results: list[CheckResult]) -> list[CheckResult]:
    """One cause, one failure: a run fail-fast stopped fails for what stopped it. What it then
    could not reach (steps, a final loss, files, the same NaN seen again) is noted under that
    failure, and those checks stay in the record with severity "info", not as failures of their own."""
    stop = results[0] if results and results[0].name == "fail_fast" and not results[0].passed else None
    if stop is None:
        return results
    following = [replace(r, severity="info") if not r.passed and r.severity == "fail" else r for r in results[1:]]
    notes = tuple(
        f"{r.name}: {r.found.splitlines()[0]}" for r, was in zip(following, results[1:], strict=True) if r is not was
    )
    return [replace(stop, notes=notes), *following]


def with_root_error(results: list[CheckResult], outcome: ProcessOutcome, stderr_path: Path) -> list[CheckResult]:
    """The first failed check of how the run ended (exit code, fail-fast, a forbidden stderr line)
    carries the exception stderr shows. Not for a run fail-fast stopped at a bad loss: what a
    process prints as it is stopped (torchrun's SignalException) is no cause."""
    if outcome.stopped_by and "at stderr line" not in outcome.stopped_by:
        return results
    index = next(
        (
            i
            for i, r in enumerate(results)
            if not r.passed
            and r.severity == "fail"
            and r.name in ("exit_code", "fail_fast", "stderr.forbidden_patterns")
        ),
        None,
    )
    if index is None or (cause := root_error(stderr_path)) is None:
        return results
    return [*results[:index], replace(results[index], cause=cause), *results[index + 1 :]]
