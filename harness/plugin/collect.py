"""Collection: each spec file a pytest File, each spec an Item that runs the pipeline."""

from __future__ import annotations

import datetime as _dt
import json
import os
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.context import RunContext
from harness.devices.leases import LeaseError
from harness.planning.plan import RunOrder
from harness.process.interrupts import Signalled
from harness.runner.pipeline import ended_early, run_spec, skipped_record, unchanged_record
from harness.secrets import masker_for
from harness.spec.compared import groups
from harness.spec.files import (
    check_in_repository,
    check_markers,
    load_spec_file,
    marker_names,
    parity_cycles,
    split_duplicates,
)
from harness.spec.model import SPEC_SUFFIXES, Spec
from harness.spec.typed_yaml import SpecError

STASH = pytest.StashKey[RunContext]()
# The run's plan as collection needs it: made once on the controller, sent to workers as plain data.
ORDER = pytest.StashKey[RunOrder]()
# The user property that carries a spec's record from a worker to the controller.
RECORD_PROPERTY = "trainspec"


class TrainspecWarning(UserWarning):
    """A spec's stderr matched one of its warn_patterns."""


class SpecFailure(Exception):
    """A spec's run failed one or more checks; the message is the whole story."""


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A folder reached through a symbolic link below the spec roots is not entered, as validate
    does not (harness/spec/files.py): each real folder is reached by its own path, once, and a link
    may lead out of --specs (`up -> ..`) or back into itself (`l1 -> .`, a collection without end)."""
    if not collection_path.is_symlink() or not collection_path.is_dir():
        return None
    parent = collection_path.parent.resolve()
    roots = config.stash[STASH].spec_roots
    return True if any(parent == root or root in parent.parents for root in roots) else None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix not in SPEC_SUFFIXES:
        return None
    context = parent.config.stash[STASH]
    if any(file_path == root or root in file_path.parents for root in context.spec_roots):
        return SpecFile.from_parent(parent, path=file_path)
    return None


class SpecFile(pytest.File):
    def collect(self) -> Iterator[SpecItem]:
        try:
            specs = load_spec_file(self.path)
            registered = marker_names(self.config.getini("markers"))
            for spec in specs:
                check_markers(spec, registered)
                check_in_repository(spec, self.config.stash[STASH].repo)
        except SpecError as error:
            raise self.CollectError(str(error)) from None
        for spec in specs:
            item = SpecItem.from_parent(self, name=spec.id, spec=spec)
            for marker in spec.all_markers:
                item.add_marker(marker)
            yield item


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep what the run's plan kept (the tier, --changed-since) in its order, after -k and -m have deselected."""
    order = config.stash[ORDER]
    specs = [item for item in items if isinstance(item, SpecItem)]
    if not specs:
        return
    unique, duplicates = split_duplicates(item.spec for item in specs)
    if problems := duplicates + parity_cycles(unique):
        raise pytest.UsageError(str(problems[0]))
    deselected = [item for item in specs if not order.kept(item.spec.id)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    kept = [item for item in specs if order.kept(item.spec.id)]
    compared = groups(unique)
    for item in kept:
        item.planned_priority = order.priority(item.spec.id)
        item.expected = order.expected(item.spec.id)
        item.compared = item.spec.id in compared
    # What cannot run here first: its skip record costs nothing and says so at once.
    kept.sort(key=lambda item: (item.spec.id in order.runs, item.planned_priority))
    others = [item for item in items if not isinstance(item, SpecItem)]
    items[:] = kept + others


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A spec's report, masked (an internal error under `-l` shows the run's environment as
    locals, into the terminal and junit.xml) and, when skipped, pointing at the spec's file and line."""
    report = yield
    if not isinstance(item, SpecItem):
        return report
    masker = masker_for(os.environ, item.spec.env)
    if report.longrepr is not None and not isinstance(report.longrepr, tuple):
        report.longrepr = masker.text(str(report.longrepr))
    elif isinstance(report.longrepr, tuple) and report.skipped:
        report.longrepr = (str(item.spec.source), item.spec.line or 1, masker.text(report.longrepr[2]))
    report.sections = [(title, masker.text(text)) for title, text in report.sections]
    return report


class SpecItem(pytest.Item):
    def __init__(self, *, spec: Spec, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec = spec
        self.planned_priority = 0
        self.expected = spec.timeout
        # Compared with another spec (parity, repeats): its check needs a fresh curve of every side.
        self.compared = False

    @property
    def context(self) -> RunContext:
        return self.config.stash[STASH]

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, (self.spec.line or 1) - 1, f"spec {self.spec.id}"

    def setup(self) -> None:
        record = skipped_record(self.spec, self.context) or (
            None if self.compared else unchanged_record(self.spec, self.context)
        )
        if record is not None:
            self.user_properties.append((RECORD_PROPERTY, json.dumps(record.to_json())))
            pytest.skip(record.reason)

    def runtest(self) -> None:
        began = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        try:
            run = run_spec(self.spec, self.context, priority=self.planned_priority, expected=self.expected)
        except (Signalled, LeaseError, OSError) as error:
            # The run is already ended (its group was cleaned up on the way out); the other specs go on.
            # A lease state or a run directory the harness cannot write (a full disk) is the machine's failure.
            reason = (
                f"the harness could not write in {self.context.output_dir(self.spec.id)}: {error.strerror or error}"
                if isinstance(error, OSError)
                else str(error)
            )
            record = ended_early(self.spec, self.context, began, reason, machine=not isinstance(error, Signalled))
            self.user_properties.append((RECORD_PROPERTY, json.dumps(record.to_json())))
            raise SpecFailure(f"spec {self.spec.id} ({self.spec.source}): {reason}") from None
        except KeyboardInterrupt:
            # The stand-in record stays, with the attempts that had failed before (`retries`).
            ended_early(self.spec, self.context, began)
            raise
        self.user_properties.append((RECORD_PROPERTY, json.dumps(run.record.to_json())))
        for line in run.warnings:
            # Attributed to the spec file, so pytest's summary points at the spec, not at us.
            warnings.warn_explicit(TrainspecWarning(line), TrainspecWarning, str(self.spec.source), self.spec.line or 1)
        if run.failure:
            raise SpecFailure(run.failure)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, SpecFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style=style))
