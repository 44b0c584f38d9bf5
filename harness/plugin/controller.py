"""Controller side: order xdist's work by the plan, follow progress, gather every spec's record,
write results.json and the report, and print the summary."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sys
from collections.abc import Generator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from xdist.scheduler.protocol import Scheduling

from harness.checks.parity import Comparison, Comparisons, apply
from harness.context import RunContext
from harness.planning.plan import Plan
from harness.plugin.collect import RECORD_PROPERTY
from harness.plugin.xdist_scheduling import PlanScheduling
from harness.process import end_tracked_groups
from harness.records import SpecResult, gather, load_document, write_results
from harness.repo_writes import Snapshot, repo_writes_since, snapshot
from harness.report.junit import mark_kinds
from harness.report.kinds import failures_by_kind
from harness.report.progress import Progress
from harness.report.schedule import ScheduleFigures, schedule_figures
from harness.report.summary import summary_lines, write_run_report
from harness.rundir import give_room, keep_room, release
from harness.runner.peaks import peaks_to_keep
from harness.secrets import masker_for
from harness.spec.files import load_spec_file
from harness.spec.model import SPEC_SUFFIXES, Spec
from harness.spec.typed_yaml import SpecError

if TYPE_CHECKING:
    from harness.history.hook import RunHistory


def _is_spec(nodeid: str) -> bool:
    return nodeid.split("::", 1)[0].endswith(SPEC_SUFFIXES)


class Controller:
    """Controller-side hooks: gather every spec's record, write results.json, print the summary."""

    def __init__(self, context: RunContext, plan: Plan):
        self.context = context
        self.plan = plan
        self.expected = {p.spec.id: p.expected for p in plan.runs}
        self._nodeids: dict[str, str] = {}
        self.figures: ScheduleFigures | None = None
        self.records: dict[str, SpecResult] = {}
        self.progress: Progress | None = None
        self.tree_before: Snapshot | None = None
        self.repo_writes: list[str] = []
        self.not_written = ""  # why a record of the run could not be written (a full disk), if one could not
        self.history: RunHistory | None = None
        # A reused --run-dir holds records of earlier runs: only this run's are gathered.
        self.started_at = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        self.comparisons = Comparisons(self._spec_of)
        self._loaded: dict[str, dict[str, Spec]] = {}
        self._config: pytest.Config | None = None

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Scheduling:
        ends = {p.spec.id: p.start + p.expected for p in self.plan.runs}
        return PlanScheduling(config, log, expected_end=lambda nodeid: ends.get(nodeid.rsplit("::", 1)[-1], 0.0))

    def _spec_of(self, spec_id: str) -> Spec | None:
        """The spec behind a record, read from the file the record names (once per file)."""
        record = self.records.get(spec_id)
        if record is None or not record.file:
            return None
        if record.file not in self._loaded:
            try:
                self._loaded[record.file] = {s.id: s for s in load_spec_file(Path(record.file))}
            except SpecError:
                self._loaded[record.file] = {}
        return self._loaded[record.file].get(spec_id)

    def _settle(self, comparison: Comparison) -> bool:
        """A comparison into both records (rewritten on disk too) and into pytest's reports as a test of
        its own (`<spec nodeid>::parity[PARTNER]`): junit.xml, `--lf` and the exit status see it."""
        failed = apply(comparison, self.records)
        for spec_id in {comparison.spec, comparison.partner}:
            record = self.records.get(spec_id)
            if record is not None and record.output_dir and Path(record.output_dir).is_dir():
                record.write(Path(record.output_dir))
        if self._config is not None:
            self._report(comparison)
        return failed

    def _report(self, comparison: Comparison) -> None:
        owner = self.records[comparison.spec]
        base = self._nodeids.get(owner.id) or f"{owner.file}::{owner.id}"
        nodeid = f"{base}::{comparison.kind}[{comparison.partner}]"
        line = comparison.check().line()
        # Not compared: the spec failed on its own, which its own test already says.
        outcome = {"passed": "passed", "failed": "failed"}.get(comparison.status, "skipped")
        longrepr: str | tuple[str, int, str] | None = None
        if outcome == "failed":
            longrepr = f"spec {owner.id} ({owner.file}) failed its comparison:\n  {line}"
        elif outcome == "skipped":
            longrepr = (owner.file, 1, comparison.reason)
        for when, result in (("call", outcome), ("teardown", "passed")):
            report = pytest.TestReport(
                nodeid,
                (owner.file, 0, f"{comparison.kind} {owner.id} == {comparison.partner}"),
                {},
                result,  # type: ignore[arg-type]  # one of pytest's three outcomes
                longrepr if when == "call" else None,
                when,  # type: ignore[arg-type]
            )
            report.trainspec_comparison = True  # type: ignore[attr-defined]  # ours: not a spec's own report
            self._config.hook.pytest_runtest_logreport(report=report)  # type: ignore[union-attr]

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._config = session.config
        # Left by an interrupted run in the same run dir, it would turn this run's crashes into interruptions.
        self.context.interrupted_marker.unlink(missing_ok=True)
        keep_room(self.context.run_dir)
        self.tree_before = (
            None
            if session.config.getoption("allow_repo_writes")
            else snapshot(self.context.repo, skip=[self.context.run_dir])
        )
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and session.config.get_verbosity() == 0:
            # Our lines replace pytest's file names and letters, which say little about runs of minutes.
            reporter.showfspath = False
            capture = session.config.pluginmanager.get_plugin("capturemanager")
            self.progress = Progress(
                reporter,
                self.context.pool,
                live=reporter.isatty,
                expected=lambda spec_id: self.expected.get(spec_id, 0.0),
                uncaptured=capture.global_and_fixture_disabled if capture else contextlib.nullcontext,
            )

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.progress:
            self.progress.total = len(session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if self.progress:
            self.progress.total = len(ids)

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        if self.progress and _is_spec(nodeid):
            self.progress.spec_started(nodeid.rsplit("::", 1)[-1])

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config) -> Generator[None, Any, Any]:
        category, letter, word = yield
        if self.progress and _is_spec(report.nodeid):
            # No letter (our progress line says it); the word stays for pytest's short summary ("SKIPPED [1] ...").
            return category, "", word
        return category, letter, word

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if getattr(report, "trainspec_comparison", False):
            return
        spec_id = report.nodeid.rsplit("::", 1)[-1]
        known = spec_id in self.records
        arrived: SpecResult | None = None
        for name, value in report.user_properties:
            if name == RECORD_PROPERTY:
                arrived = SpecResult.from_json(json.loads(str(value)))
                if arrived.id not in self.records:
                    self.records[arrived.id] = arrived
                    self._nodeids.setdefault(arrived.id, report.nodeid)
        if report.failed and spec_id not in self.records:
            # A worker that died mid-run sends a bare report: record it rather than lose the spec.
            text = str(report.longrepr or "").strip()
            reason = text.splitlines()[-1][:500] if text else "the worker running it died"
            self.records[spec_id] = SpecResult(
                id=spec_id,
                outcome="error",
                reason=reason,
                output_dir=str(self.context.output_dir(spec_id)),
                failure_kind="harness",
                failure_evidence=f"the harness failed running the spec: {reason}",
            )
        if self.progress and not known and spec_id in self.records:
            self.progress.spec_finished(self.records[spec_id])
        if not known and spec_id in self.records:
            for comparison in self.comparisons.arrived(self.records[spec_id], self.records):
                self._settle(comparison)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.progress:
            self.progress.stop()
        context = self.context
        context.backend.cancel_all()
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            context.interrupted_marker.touch()
        # What a worker could not end: it was killed, or xdist tore it down while its run ignored SIGTERM.
        end_tracked_groups(context.groups_dir)
        on_disk = {r.id: r for r in gather(context.run_dir) if r.started_at >= self.started_at}
        self.records.update({k: v for k, v in on_disk.items() if k not in self.records})
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
        if not self.records and not interrupted:
            return
        if any([self._settle(c) for c in self.comparisons.remaining(self.records)]):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        meta = {
            "backend": context.backend.name,
            "devices": asdict(context.inventory),
            "tier": context.tier,
            "versions": context.versions,
            "argv": masker_for(os.environ).data(sys.argv[1:]),
            # Interrupted while collecting, a run has no records yet, and says so all the same.
            "interrupted": interrupted,
            "failures_by_kind": failures_by_kind(self.records.values()),
        }
        took = {r.id: r.duration for r in self.records.values() if r.start_time > 0}
        self.figures = schedule_figures(
            self.records.values(),
            context.inventory.ids,
            self.plan.simulated,
            self.plan.lower_bound_over(took),
            sum(not p.recorded for p in self.plan.runs),
        )
        if self.figures is not None:
            meta["schedule"] = self.figures.to_json()
        if self.tree_before is not None and (after := snapshot(context.repo, skip=[context.run_dir])) is not None:
            self.repo_writes = repo_writes_since(self.tree_before, after, context.repo, [context.run_dir])
            meta["repo_writes"] = self.repo_writes
            if self.repo_writes:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        give_room(context.run_dir)
        try:
            path = write_results(context.run_dir, sorted(self.records.values(), key=lambda r: r.id), meta)
        except OSError as error:
            # A full disk even after the room kept for the records was freed: said in one line, not a traceback.
            self.not_written = f"results.json was not written: {error}"
            session.exitstatus = max(int(session.exitstatus), pytest.ExitCode.TESTS_FAILED)
            return
        # Imported here: the SQL toolkit is the controller's cost only, never a worker's.
        from harness.history.hook import after_run

        self.history = after_run(path, context.values, context.repo)
        session.exitstatus = self.history.exit_status(
            int(session.exitstatus), list(self.records.values()), bool(self.repo_writes)
        )
        try:
            write_run_report(context.run_dir, load_document(path))
        except OSError as error:
            self.not_written = f"report.html was not written: {error}"
        context.durations.record(
            {r.id: r.duration for r in self.records.values() if r.outcome in ("passed", "failed") and r.duration > 0}
        )
        context.peaks.record(peaks_to_keep(self.records.values(), context.peaks.load()))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # pytest's junitxml has written its file by now (at the session's end).
        xmlpath = getattr(config.option, "xmlpath", None)
        if xmlpath and self.records:
            mark_kinds(Path(xmlpath), self.records)
        release(self.context.run_dir)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.records:
            return
        terminalreporter.section("trainspec")
        for line in summary_lines(sorted(self.records.values(), key=lambda r: r.id), self.context.run_dir):
            terminalreporter.write_line(line)
        if self.not_written:
            terminalreporter.write_line(f"FAIL  {self.not_written}", red=True)
        if self.figures is not None:
            terminalreporter.write_line(self.figures.line())
        for line in self.history.summary_lines() if self.history else []:
            terminalreporter.write_line(line, yellow=not line.startswith("FLAKY"))
        if self.repo_writes:
            shown = ", ".join(self.repo_writes[:20]) + (
                f" and {len(self.repo_writes) - 20} more" if len(self.repo_writes) > 20 else ""
            )
            terminalreporter.write_line(
                f"FAIL  the run wrote into the repository: {shown} (specs must write under {{output_dir}}; "
                "--allow-repo-writes to accept)",
                red=True,
            )
