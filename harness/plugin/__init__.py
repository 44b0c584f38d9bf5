"""The pytest plugin: it only adapts the pipeline to pytest.

`collect` turns spec files into items (one per spec) that call `pipeline.run_spec`;
`controller` gathers every spec's record on the controller side into results.json, the
report and the summary. Here: the options (from the one option table), and the run's
context and plan: handed over by the CLI (`Prepared`), or made here when pytest is called
directly, on the controller only; each xdist worker gets both as plain data.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import backends, terminal
from harness.context import ContextError, RunContext, create
from harness.history.location import LocationError, from_values
from harness.options import add_to_parser
from harness.planning.concurrency import plan_run
from harness.planning.plan import Plan, RunOrder
from harness.planning.selection import SelectionError
from harness.plugin.collect import (
    ORDER,
    STASH,
    pytest_collect_file,
    pytest_collection_modifyitems,
    pytest_ignore_collect,
    pytest_runtest_makereport,
)
from harness.plugin.controller import Controller
from harness.process import track_groups
from harness.process.interrupts import interrupt_on_termination
from harness.secrets import masker_for
from harness.spec.files import load_specs, named_spec_files
from harness.spec.model import BUILTIN_MARKERS

__all__ = [
    "pytest_addoption",
    "pytest_collect_file",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_configure_node",
    "pytest_ignore_collect",
    "pytest_runtest_makereport",
    "pytest_runtestloop",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trainspec", "trainspec: spec-driven training tests")
    group.addoption(
        "--specs",
        action="append",
        default=None,
        metavar="PATH",
        help="spec files or folders to collect (default: the ini option trainspec_specs, else specs/)",
    )
    add_to_parser(group, [option for option in backends.run_options() if option.pytest])
    parser.addini("trainspec_specs", type="paths", default=[], help="spec files or folders collected by default")


@dataclass(frozen=True, eq=False)  # pluggy keeps plugins in a set: hashed by identity
class Prepared:
    """A run the CLI set up and planned already (`pytest.main(..., plugins=[Prepared(...)])`):
    the plugin takes it rather than set up and plan the same run again."""

    context: RunContext
    plan: Plan


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    for name, doc in BUILTIN_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    if _is_worker(config):
        # A worker's stderr is the controller's terminal: it may go away, and must stay masked.
        terminal.guard(masker_for(os.environ))
        config.stash[STASH] = RunContext.from_wire(config.workerinput["trainspec"])  # type: ignore[attr-defined]  # xdist sets workerinput on workers
        config.stash[ORDER] = RunOrder.from_wire(config.workerinput["trainspec_order"])  # type: ignore[attr-defined]
        # A SIGTERM to the whole group reaches each worker, as Ctrl-C does; one to a worker alone is its spec's crash.
        interrupt_on_termination(config.stash[STASH].interrupted_marker, worker=True)
        track_groups(config.stash[STASH].groups_dir)
        return
    interrupt_on_termination()
    prepared = next((p for p in config.pluginmanager.get_plugins() if isinstance(p, Prepared)), None)
    try:
        context, plan = (prepared.context, prepared.plan) if prepared else _prepare(config)
    except (ContextError, LocationError, SelectionError) as error:
        raise pytest.UsageError(str(error)) from None
    config.stash[STASH] = context
    config.stash[ORDER] = plan.run_order()
    interrupt_on_termination(context.interrupted_marker)
    track_groups(context.groups_dir)
    config.pluginmanager.register(Controller(context, plan), "trainspec-controller")


def _prepare(config: pytest.Config) -> tuple[RunContext, Plan]:
    """Set up and plan the run from pytest's options, when pytest is called without the CLI."""
    invocation = config.invocation_params.dir
    repo = Path(config.getoption("repo") or invocation).resolve()
    roots = (
        [Path(p) for p in (config.getoption("specs") or [])]
        or list(config.getini("trainspec_specs"))
        or [repo / "specs"]
    )
    roots += named_spec_files(config.args)
    roots = [(p if p.is_absolute() else invocation / p).resolve() for p in roots]
    values = {option.name: config.getoption(option.name) for option in backends.run_options() if option.pytest}
    workers = config.getoption("numprocesses", None)
    # The plan simulates the workers xdist was told to start (none: one run at a time).
    values["workers"] = workers if isinstance(workers, int) else 0
    from_values(values, repo)
    context = create(values, repo, roots)
    # Spec files that do not load are reported by collection, as pytest's errors.
    specs, _ = load_specs(roots)
    return context, plan_run(specs, context)


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    try:
        return (yield)
    finally:
        _leave_a_deleted_start_folder(session.config)


def _leave_a_deleted_start_folder(config: pytest.Config) -> None:
    """pytest goes back to the folder it was started in once the specs ran (`os.chdir`), before the records
    are written: that folder deleted mid-run (by a spec, by the user) would end the run there, with a
    FileNotFoundError and no results.json. The run directory stands in for it."""
    if config.invocation_params.dir.is_dir():
        return
    refuge = config.stash[STASH].run_dir
    config.invocation_params = dataclasses.replace(config.invocation_params, dir=refuge)
    os.chdir(refuge)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist, controller side: hand each worker the run's shared context and its order."""
    node.workerinput["trainspec"] = node.config.stash[STASH].to_wire()
    node.workerinput["trainspec_order"] = node.config.stash[ORDER].to_wire()
