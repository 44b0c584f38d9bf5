"""The pytest plugin: each spec file is collected as test items, one per spec.

Controller side: discover the devices, pick the run directory, order the items by the plan,
gather every spec's record into `results.json`. Worker side (or the same process without
xdist): lease devices, run, check, write the record next to the spec's outputs.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import sys
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import pytest

from .baseline import BaselineError, compare, load_baseline, parse_tolerances
from .checks import CheckResult, failure_reason, run_checks, tail
from .devices import DeviceError, Inventory, discover, skip_reason, slurm_inventory
from .inference import run_inference
from .leases import LeasePool
from .perplexity import DEFAULT_SCORER
from .plan import DurationCache, cache_root, default_run_dir, in_tier, make_plan
from .progress import Progress
from .report import summary_lines, write_run_report
from .results import SpecResult, environment_versions, gather, load_results, read_child_versions, thin_curve, write_results
from .runner import CHILD_VERSIONS_FILE, Launch, LocalBackend, build_launch, end_group, placeholder_values
from .scheduler import PlanScheduling
from .secrets import Masker, masker_for
from .slurm import SlurmBackend, SlurmOptions, cancel_run
from .spec import BUILTIN_MARKERS, SPEC_SUFFIXES, TIERS, Spec, check_markers, load_spec_file
from .structure import SpecError
from .tree import Snapshot, snapshot, written
from .watch import fail_fast_watchers

STASH = pytest.StashKey["RunContext"]()
RECORD_PROPERTY = "trainspec"
TAIL_LINES = 20


class TrainspecWarning(UserWarning):
    """A spec's stderr matched one of its warn_patterns."""


class SpecFailure(Exception):
    """A spec's run failed one or more checks; the message is the whole story."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trainspec", "trainspec: spec-driven training tests")
    group.addoption("--specs", action="append", default=None, metavar="PATH", help="spec files or folders to collect (default: the ini option trainspec_specs, else specs/)")
    group.addoption("--tier", choices=TIERS, default=None, help="smoke, standard (integration and not slow) or full (everything; the default)")
    group.addoption("--gpus", type=int, default=None, metavar="N", help="devices this run may use (default: CUDA_VISIBLE_DEVICES, else nvidia-smi -L)")
    group.addoption("--fake-gpus", type=int, default=None, metavar="N", help="simulate N devices on a machine without CUDA; only cpu_ok specs run")
    group.addoption("--run-dir", default=None, metavar="DIR", help="where outputs, results.json and junit.xml go (default: a fresh folder under the trainspec cache, outside the repository)")
    group.addoption("--scorer", default=None, metavar="MODEL", help="reference model for perplexity: a name in the local Hugging Face cache or a path (default: TRAINSPEC_SCORER, else gpt2); a spec's inference.scorer wins")
    group.addoption("--missing-scorer", choices=("fail", "skip"), default="fail", help="when the scorer model is not on this machine: fail the spec (default) or skip its inference stage")
    group.addoption("--baseline", default=None, metavar="PATH", help="a stored results.json (or run directory) to compare with: final loss, perplexity and duration beyond the spec's baseline tolerances are flagged")
    group.addoption("--tolerance", action="append", default=None, metavar="METRIC=FRACTION", help="override every spec's baseline tolerance, e.g. final_loss=0.1 (metrics: final_loss, perplexity, duration)")
    group.addoption("--backend", choices=("local", "slurm"), default="local", help="where runs execute: this machine, or one Slurm job (srun) per spec")
    group.addoption("--partition", default=None, metavar="P", help="Slurm partition for every job (default: the cluster's default)")
    group.addoption("--slurm-arg", action="append", default=None, metavar="ARG", help="one more srun option for every job (repeatable)")
    group.addoption("--allow-repo-writes", action="store_true", default=False, help="do not fail the run when specs wrote into the repository (checked with git before and after)")
    group.addoption("--repo", default=None, metavar="DIR", help="the repository root that spec cwds are relative to (default: the current directory)")
    parser.addini("trainspec_specs", type="paths", default=[], help="spec files or folders collected by default")


@dataclass
class RunContext:
    """What every item of this run shares: where things go, which devices exist, the run's settings.

    The controller builds it from the command line and hands it to each xdist worker.
    """

    repo: Path
    run_dir: Path
    inventory: Inventory
    spec_roots: list[Path]
    tier: str | None
    scorer: str = DEFAULT_SCORER
    missing_scorer: str = "fail"
    baseline: str | None = None
    tolerances: dict[str, float] = field(default_factory=dict)
    backend: str = "local"
    partition: str | None = None
    slurm_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The first item of each worker (one worker per device) starts together: the first wave.
        self.pool = LeasePool(self.run_dir / "leases.json", self.inventory.ids, first_wave=self.inventory.count)
        # The same on every worker, so the controller can find (and cancel) the run's jobs.
        self.run_tag = hashlib.sha1(str(self.run_dir).encode()).hexdigest()[:8]
        self.executor = SlurmBackend(SlurmOptions(self.partition, tuple(self.slurm_args), self.run_tag)) if self.backend == "slurm" else LocalBackend()
        self.versions = environment_versions()
        self.durations = DurationCache(cache_root(self.repo) / "durations.json")

    def output_dir(self, spec_id: str) -> Path:
        """Where a spec's outputs and record go (results.gather reads specs/*/)."""
        return self.run_dir / "specs" / spec_id

    @property
    def interrupted_marker(self) -> Path:
        """Put down by the controller when the run is interrupted, before it ends what still runs."""
        return self.run_dir / ".interrupted"

    def to_wire(self) -> dict[str, Any]:
        settings = {f.name: getattr(self, f.name) for f in fields(self)}
        return json.loads(json.dumps({**settings, "inventory": asdict(self.inventory)}, default=str))

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "RunContext":
        inventory = Inventory(tuple(data["inventory"]["ids"]), data["inventory"]["kind"], data["inventory"]["source"])
        paths = {"repo": Path(data["repo"]), "run_dir": Path(data["run_dir"]), "spec_roots": [Path(p) for p in data["spec_roots"]]}
        return cls(**{**data, **paths, "inventory": inventory})


def _is_spec(nodeid: str) -> bool:
    return nodeid.split("::", 1)[0].endswith(SPEC_SUFFIXES)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def named_spec_files(arguments: list[str]) -> list[Path]:
    """Spec files named on the command line (`run path/to/spec.yaml[::id]`) are collected wherever they are.

    Folders are not: a test folder may hold YAML that is not a spec.
    """
    return [Path(a.split("::")[0]) for a in arguments if Path(a.split("::")[0]).suffix in SPEC_SUFFIXES]


def pytest_configure(config: pytest.Config) -> None:
    for name, doc in BUILTIN_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    if _is_worker(config):
        config.stash[STASH] = RunContext.from_wire(config.workerinput["trainspec"])
        return
    invocation = config.invocation_params.dir
    repo = Path(config.getoption("repo") or invocation).resolve()
    roots = [Path(p) for p in (config.getoption("specs") or [])] or list(config.getini("trainspec_specs")) or [repo / "specs"]
    roots += named_spec_files(config.args)
    roots = [(p if p.is_absolute() else invocation / p).resolve() for p in roots]
    try:
        if config.getoption("backend") == "slurm":
            inventory = slurm_inventory(config.getoption("partition"))
        else:
            inventory = discover(config.getoption("gpus"), config.getoption("fake_gpus"))
    except DeviceError as error:
        raise pytest.UsageError(str(error)) from None
    run_dir = Path(config.getoption("run_dir") or default_run_dir(repo)).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    scorer = config.getoption("scorer") or os.environ.get("TRAINSPEC_SCORER") or DEFAULT_SCORER
    try:
        tolerances = parse_tolerances(config.getoption("tolerance") or [])
        if config.getoption("baseline"):
            load_baseline(str(Path(config.getoption("baseline")).resolve()))
    except (ValueError, BaselineError) as error:
        raise pytest.UsageError(str(error)) from None
    baseline = str(Path(config.getoption("baseline")).resolve()) if config.getoption("baseline") else None
    context = RunContext(repo, run_dir, inventory, roots, config.getoption("tier"), scorer, config.getoption("missing_scorer"), baseline, tolerances,
                         config.getoption("backend"), config.getoption("partition"), config.getoption("slurm_arg") or [])
    config.stash[STASH] = context
    config.pluginmanager.register(Controller(context), "trainspec-controller")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist, controller side: hand each worker the run's shared context."""
    node.workerinput["trainspec"] = node.config.stash[STASH].to_wire()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix not in SPEC_SUFFIXES:
        return None
    context = parent.config.stash[STASH]
    if any(file_path == root or root in file_path.parents for root in context.spec_roots):
        return SpecFile.from_parent(parent, path=file_path)
    return None


class SpecFile(pytest.File):
    def collect(self) -> Iterator["SpecItem"]:
        try:
            specs = load_spec_file(self.path)
            registered = [line.split(":")[0].split("(")[0].strip() for line in self.config.getini("markers")]
            for spec in specs:
                check_markers(spec, registered)
        except SpecError as error:
            raise self.CollectError(str(error)) from None
        for spec in specs:
            item = SpecItem.from_parent(self, name=spec.id, spec=spec)
            for marker in spec.all_markers:
                item.add_marker(marker)
            yield item


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the tier, order by the plan, and mark what cannot run here (after -k and -m have deselected)."""
    context = config.stash[STASH]
    specs = [item for item in items if isinstance(item, SpecItem)]
    if not specs:
        return
    _refuse_duplicate_ids(specs)
    deselected = [item for item in specs if not in_tier(item.spec, context.tier)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    plan = make_plan([item.spec for item in specs], context.inventory, context.durations.load(), context.tier)
    planned = {p.spec.id: p for p in [*plan.runs, *plan.skipped]}
    kept = [item for item in specs if item.spec.id in planned]
    for item in kept:
        item.planned_priority = planned[item.spec.id].priority
        item.expected = planned[item.spec.id].expected
    kept.sort(key=lambda item: (planned[item.spec.id].skip is None, item.planned_priority))
    others = [item for item in items if not isinstance(item, SpecItem)]
    items[:] = kept + others


def _refuse_duplicate_ids(items: list["SpecItem"]) -> None:
    seen: dict[str, SpecItem] = {}
    for item in items:
        if item.spec.id in seen:
            first = seen[item.spec.id].spec
            raise pytest.UsageError(str(SpecError(item.spec.source, "id", f"duplicate id {item.spec.id!r}, also used in {first.source}:{first.line}", item.spec.line)))
        seen[item.spec.id] = item


class SpecItem(pytest.Item):
    def __init__(self, *, spec: Spec, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec = spec
        self.planned_priority = 0
        self.expected = spec.timeout

    @property
    def context(self) -> RunContext:
        return self.config.stash[STASH]

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, (self.spec.line or 1) - 1, f"spec {self.spec.id}"

    def _base_record(self, outcome: str, reason: str = "") -> SpecResult:
        return SpecResult(
            id=self.spec.id,
            outcome=outcome,  # type: ignore[arg-type]
            reason=reason,
            file=str(self.spec.source),
            tier=self.spec.effective_tier,
            device_kind=self.context.inventory.kind,
            output_dir=str(self.context.output_dir(self.spec.id)),
            versions=self.context.versions,
            started_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )

    def setup(self) -> None:
        reason = skip_reason(self.spec, self.context.inventory)
        if reason:
            self.user_properties.append((RECORD_PROPERTY, json.dumps(self._base_record("skipped", reason).to_json())))
            pytest.skip(reason)

    def runtest(self) -> None:
        """Run the spec; with `retries: N`, run a failed one again up to N times, keeping every attempt."""
        output_dir = self.context.output_dir(self.spec.id)
        earlier: list[dict] = []
        while True:
            record, failed, warned, launch, masker = self._attempt(output_dir)
            if not failed or len(earlier) >= self.spec.retries:
                break
            # The failed attempt's outputs move aside (outside specs/, so only the last is gathered).
            kept = self.context.run_dir / "attempts" / self.spec.id / str(len(earlier) + 1)
            shutil.rmtree(kept, ignore_errors=True)
            kept.parent.mkdir(parents=True, exist_ok=True)
            output_dir.rename(kept)
            record.output_dir = str(kept)
            record.write(kept)
            earlier.append(_attempt_summary(record, len(earlier) + 1))
        if earlier:
            record.attempts = [*earlier, _attempt_summary(record, len(earlier) + 1)]
            record.flaky = not failed
            if record.flaky:
                record.warnings.append(f"flaky: passed on attempt {len(earlier) + 1} after {len(earlier)} failed ({earlier[0]['reason']})")
        record.write(output_dir)
        self.user_properties.append((RECORD_PROPERTY, json.dumps(record.to_json())))
        for check in warned:
            # Attributed to the spec file, so pytest's summary points at the spec, not at us.
            warnings.warn_explicit(TrainspecWarning(masker.text(f"{self.spec.id}: {check.line()}")), TrainspecWarning, str(self.spec.source), self.spec.line or 1)
        if failed:
            raise SpecFailure(failure_message(self.spec, failed, launch.stderr_path, output_dir, masker))

    def _attempt(self, output_dir: Path) -> tuple[SpecResult, list[CheckResult], list[CheckResult], Launch, Masker]:
        """One run of the spec, checked: its (masked) record, failed and warned checks, launch and masker."""
        context = self.context
        if output_dir.exists():
            shutil.rmtree(output_dir)
        output_dir.mkdir(parents=True)
        record = self._base_record("passed")
        # Stands on disk until the run's own record replaces it: a harness interrupted mid-run
        # (Ctrl-C, a worker killed) still names the spec in results.json.
        self._base_record("error", "interrupted: the harness stopped before this run finished; nothing of it was left running").write(output_dir)
        # Under Slurm the scheduler hands out devices; locally the shared pool does.
        leasing = self.spec.gpus and context.inventory.kind != "slurm"
        lease = context.pool.acquire(self.spec.gpus, self.spec.id, self.planned_priority, self.expected) if leasing else None
        devices = lease.devices if lease else ()
        try:
            launch = build_launch(self.spec, repo=context.repo, run_dir=context.run_dir, output_dir=output_dir, devices=devices, inventory=context.inventory)
            masker = masker_for(launch.env)
            _write_launch(launch, masker)
            watchers = fail_fast_watchers(self.spec, output_dir, launch.stderr_path)
            outcome = context.executor.run(launch, watchers, on_start=lease.attach if lease else None)
            if outcome.signal is not None and context.interrupted_marker.exists():
                # The controller's clean-up killed it (SIGINT reached the controller alone): the
                # spec was interrupted, as its stand-in record already says, not failed.
                raise KeyboardInterrupt
            checks, log = run_checks(self.spec, outcome, output_dir, launch.stderr_path)
            if self.spec.inference is not None:
                # The server runs on the run's own devices, so the lease is held until it stops.
                checks += self._inference_stage(record, checks, launch, output_dir, devices)
        finally:
            if lease:
                lease.release()
        record.duration = round(outcome.duration, 3)
        record.start_time = outcome.started
        record.devices = list(devices)
        record.placement = outcome.placement
        record.lease_wait = round(lease.waited, 3) if lease else 0.0
        record.command = launch.argv
        record.exit_code = outcome.exit_code
        record.paths.update({"stdout": str(launch.stdout_path), "stderr": str(launch.stderr_path), **({"log": str(log.path)} if log else {})})
        record.stderr_tail = tail(launch.stderr_path, TAIL_LINES)
        record.child_versions = read_child_versions(output_dir / CHILD_VERSIONS_FILE)
        if log is not None:
            record.steps_logged = len(log.entries)
            record.final_loss = log.final.loss if log.final and log.final.loss is not None and math.isfinite(log.final.loss) else None
            record.loss_curve = thin_curve(log.curve())
        if context.baseline:
            compared, record.regressions = compare(record, load_baseline(context.baseline).get(self.spec.id), self.spec.baseline, context.tolerances)
            checks += compared
        record.checks = [c.as_dict() for c in checks]
        failed = [c for c in checks if not c.passed and c.severity == "fail"]
        warned = [c for c in checks if not c.passed and c.severity == "warn"]
        record.warnings += [c.line() for c in warned]
        if failed:
            record.outcome = "failed"
            record.reason = failure_reason(failed)
        return SpecResult.from_json(masker.data(record.to_json())), failed, warned, launch, masker

    def _inference_stage(self, record: SpecResult, checks: list[CheckResult], launch, output_dir: Path, devices: tuple[str, ...]) -> list[CheckResult]:
        if any(not c.passed and c.severity == "fail" for c in checks):
            record.warnings.append("inference stage not run: the training failed")
            return []
        context = self.context
        values = placeholder_values(repo=context.repo, run_dir=context.run_dir, output_dir=output_dir, gpus=len(devices))
        stage = run_inference(self.spec, output_dir=output_dir, cwd=launch.cwd, env=launch.env, values=values, scorer=context.scorer, missing_scorer=context.missing_scorer)
        record.perplexity = stage.worst_perplexity
        record.inference = stage.as_records()
        if stage.server_stderr:
            record.paths["server_stderr"] = str(stage.server_stderr)
        if stage.skipped:
            record.warnings.append(f"inference stage skipped: {stage.skipped}")
        return stage.checks

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, SpecFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)


def _attempt_summary(record: SpecResult, number: int) -> dict:
    return {"attempt": number, "outcome": record.outcome, "reason": record.reason, "duration": record.duration, "output_dir": record.output_dir}


def _write_launch(launch, masker: Masker) -> None:
    """What ran, so a person can run it again by hand (giving any masked secret again)."""
    changed = {k: v for k, v in launch.env.items() if os.environ.get(k) != v}
    document = {"argv": launch.argv, "cwd": str(launch.cwd), "env": changed, "timeout": launch.timeout}
    (launch.output_dir / "launch.json").write_text(json.dumps(masker.data(document), indent=2))


def failure_message(spec: Spec, failed: list[CheckResult], stderr_path: Path, output_dir: Path, masker: Masker) -> str:
    """What pytest prints (and junit.xml keeps) for a failed spec; the child's stderr may echo a secret."""
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


class Controller:
    """Controller-side hooks: gather every spec's record, write results.json, print the summary."""

    def __init__(self, context: RunContext):
        self.context = context
        self.records: dict[str, SpecResult] = {}
        self.progress: Progress | None = None
        self._expected = None
        self._nodeids: dict[str, str] = {}
        self.tree_before: Snapshot | None = None
        self.repo_writes: list[str] = []
        # A reused --run-dir holds records of earlier runs: only this run's are gathered.
        self.started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> PlanScheduling:
        return PlanScheduling(config, log, expected=self._expected_seconds(config.rootpath))

    def _expected_seconds(self, rootpath: Path):
        """nodeid -> expected seconds, from the same durations and specs the workers planned with.

        Built once: the scheduler and the progress line share it (and the spec files it read).
        """
        if self._expected is None:
            self._expected = self._build_expected(rootpath)
        return self._expected

    def _build_expected(self, rootpath: Path):
        durations = self.context.durations.load()
        timeouts: dict[str, float] = {}
        read: set[str] = set()

        def expected(nodeid: str) -> float:
            path, _, spec_id = nodeid.partition("::")
            if spec_id in durations:
                return durations[spec_id]
            if path not in read:
                read.add(path)
                try:
                    timeouts.update({s.id: s.timeout for s in load_spec_file(rootpath / path)})
                except SpecError:
                    pass
            return timeouts.get(spec_id, 0.0)

        return expected

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # Left by an interrupted run in the same run dir, it would turn this run's crashes into interruptions.
        self.context.interrupted_marker.unlink(missing_ok=True)
        self.tree_before = None if session.config.getoption("allow_repo_writes") else snapshot(self.context.repo)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and session.config.get_verbosity() == 0:
            # Our lines replace pytest's file names and letters, which say little about runs of minutes.
            reporter.showfspath = False
            by_nodeid = self._expected_seconds(session.config.rootpath)
            capture = session.config.pluginmanager.get_plugin("capturemanager")
            self.progress = Progress(reporter, self.context.pool, live=reporter.isatty, expected=lambda spec_id: by_nodeid(self._nodeids.get(spec_id, "")),
                                     uncaptured=capture.global_and_fixture_disabled if capture else contextlib.nullcontext)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.progress:
            self.progress.total = len(session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if self.progress:
            self.progress.total = len(ids)

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        if self.progress and _is_spec(nodeid):
            spec_id = nodeid.rsplit("::", 1)[-1]
            self._nodeids[spec_id] = nodeid
            self.progress.spec_started(spec_id)

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config):
        category, letter, word = yield
        if self.progress and _is_spec(report.nodeid):
            return category, "", ""
        return category, letter, word

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        spec_id = report.nodeid.rsplit("::", 1)[-1]
        known = spec_id in self.records
        for name, value in report.user_properties:
            if name == RECORD_PROPERTY:
                record = SpecResult.from_json(json.loads(value))
                self.records[record.id] = record
        if report.failed and spec_id not in self.records:
            # A worker that died mid-run sends a bare report: record it rather than lose the spec.
            text = str(report.longrepr or "").strip()
            reason = text.splitlines()[-1][:500] if text else "the worker running it died"
            self.records[spec_id] = SpecResult(id=spec_id, outcome="error", reason=reason, output_dir=str(self.context.output_dir(spec_id)))
        if self.progress and not known and spec_id in self.records:
            self.progress.spec_finished(self.records[spec_id])

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.progress:
            self.progress.stop()
        context = self.context
        if context.backend == "slurm":
            # Jobs of workers that died (Ctrl-C, SIGKILL) may still be queued or running.
            cancel_run(context.run_tag)
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            context.interrupted_marker.touch()
        for pgid in context.pool.stray_groups():
            end_group(pgid)
        on_disk = {r.id: r for r in gather(context.run_dir) if r.started_at >= self.started_at}
        self.records = {**on_disk, **self.records}
        if not self.records:
            return
        meta = {"backend": context.backend, "devices": asdict(context.inventory), "tier": context.tier, "versions": context.versions, "argv": masker_for(os.environ).data(sys.argv[1:]), "interrupted": exitstatus == pytest.ExitCode.INTERRUPTED}
        if self.tree_before is not None and (after := snapshot(context.repo)) is not None:
            self.repo_writes = written(self.tree_before, after, context.repo, [context.run_dir])
            meta["repo_writes"] = self.repo_writes
            if self.repo_writes:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        path = write_results(context.run_dir, sorted(self.records.values(), key=lambda r: r.id), meta)
        write_run_report(context.run_dir, load_results(path))
        context.durations.record({r.id: r.duration for r in self.records.values() if r.outcome in ("passed", "failed") and r.duration > 0})

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.records:
            return
        terminalreporter.section("trainspec")
        for line in summary_lines(sorted(self.records.values(), key=lambda r: r.id), self.context.run_dir):
            terminalreporter.write_line(line)
        if self.repo_writes:
            shown = ", ".join(self.repo_writes[:20]) + (f" and {len(self.repo_writes) - 20} more" if len(self.repo_writes) > 20 else "")
            terminalreporter.write_line(f"FAIL  the run wrote into the repository: {shown} (specs must write under {{output_dir}}; --allow-repo-writes to accept)", red=True)
