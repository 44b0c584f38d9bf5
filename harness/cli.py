"""`python -m harness`: list, validate, plan and run specs, with or without nox.

Exit codes: 0 all passed (or valid), 1 a spec failed, 2 bad usage or bad specs,
5 nothing ran: every spec was skipped for lack of devices (0 with --allow-skips),
130 interrupted (SIGINT, SIGTERM or SIGHUP).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import backends, terminal
from harness.caches import cache_root, default_run_dir
from harness.commands import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOTHING_RAN,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    build_parser,
    cmd_baseline,
    cmd_init,
    cmd_perplexity,
    cmd_report,
    cmd_schema,
    cmd_serve,
)
from harness.context import ContextError, RunContext, create
from harness.devices.visible import GPU_KINDS
from harness.history import cli as history_cli
from harness.history import location as history_location
from harness.logs import cli as logs_cli
from harness.options import RUN_OPTIONS, TIERS
from harness.planning import selection
from harness.planning.concurrency import describe_concurrency, plan_run
from harness.planning.plan import Plan
from harness.plugin import Prepared
from harness.process.interrupts import interrupt_on_termination
from harness.project.settings import Settings, load_settings
from harness.repo_writes import run_dir_problem
from harness.report.summary import nothing_ran, table
from harness.rundir import record_interruption, release
from harness.secrets import masker_for
from harness.spec.compared import with_partners
from harness.spec.files import check_in_repository, check_markers, load_specs, named_spec_files, registered_markers
from harness.spec.model import Spec
from harness.spec.typed_yaml import SpecError


def _spec_paths(args: argparse.Namespace, given: Sequence[str] | None) -> list[Path]:
    """Spec paths from the command line, else [tool.trainspec] specs (default specs/)."""
    return [Path(p) for p in given or args.settings_specs]


def apply_settings(args: argparse.Namespace, settings: Settings) -> None:
    """Fill what the command line left out from [tool.trainspec]; the command line wins.

    Options of one exclusive group (gpus, fake_gpus) come from the settings only when the
    command line gave none of them.
    """
    args.settings_specs = settings.specs
    given_groups = {o.exclusive for o in RUN_OPTIONS if o.exclusive and getattr(args, o.name, None) is not None}
    for option in RUN_OPTIONS:
        # Identity, not equality: a given 0 (--gpus 0, --unchanged-days 0) is a value, not an absence.
        if (
            not option.setting
            or not hasattr(args, option.name)
            or (getattr(args, option.name) is not None and getattr(args, option.name) is not False)
        ):
            continue
        if option.exclusive in given_groups:
            continue
        value = getattr(settings, option.name)
        if value is not None and option.project_path:
            value = str(Path.cwd() / value)
        setattr(args, option.name, value)


def load_valid_specs(paths: list[Path], repo: Path) -> list[Spec]:
    """Every spec under `paths`, or UsageError listing every problem found."""
    specs, errors = load_specs(paths)
    markers = registered_markers(repo)
    for spec in specs:
        try:
            check_markers(spec, markers)
            check_in_repository(spec, repo)
        except SpecError as error:
            errors.append(error)
    if errors:
        raise UsageError("\n".join(str(e) for e in errors))
    return specs


def _option_values(args: argparse.Namespace) -> dict[str, Any]:
    """Every run option's value as parsed (absent ones None), checked against its minimum."""
    values = {option.name: getattr(args, option.name, None) for option in backends.run_options()}
    for option in backends.run_options():
        value = values[option.name]
        if option.minimum is not None and isinstance(value, int) and value < option.minimum:
            raise UsageError(f"{option.flag} must be {option.minimum} or more, found {value}")
    return values


def _setup(args: argparse.Namespace, roots: list[Path], for_run: bool) -> RunContext:
    """The run's one setup (harness.context.create), shared with the pytest plugin it is handed to."""
    try:
        return create(_option_values(args), Path.cwd(), [p.resolve() for p in roots], for_run=for_run)
    except ContextError as error:
        raise UsageError(str(error)) from None


def cmd_list(args: argparse.Namespace) -> int:
    specs = load_valid_specs(_spec_paths(args, args.specs), Path.cwd())
    rows = [("id", "tier", "devices", "markers", "file")]
    for spec in sorted(specs, key=lambda s: (TIERS.index(s.effective_tier), s.id)):
        per_node = f" x {spec.nodes} nodes" if spec.nodes > 1 else ""
        devices = f"{spec.gpus}{per_node}{' (cpu_ok)' if spec.cpu_ok else ''}"
        rows.append((spec.id, spec.effective_tier, devices, ",".join(spec.all_markers), _relative(spec.source)))
    _print_table(rows)
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths] or _spec_paths(args, None)
    specs = load_valid_specs(paths, Path.cwd())
    files = {spec.source for spec in specs}
    print(
        f"{len(specs)} spec{'s' if len(specs) != 1 else ''} valid in {len(files)} file{'s' if len(files) != 1 else ''}"
    )
    return EXIT_OK


def describe_plan(plan: Plan, given_workers: int | None = None) -> list[str]:
    lines = [f"devices: {plan.inventory.describe()}", f"concurrency: {describe_concurrency(plan, given_workers)}", ""]
    at_once = max(plan.workers, 1)
    rows = [("order", "id", "devices", "memory", "expected", "from", "simulated")]
    for p in plan.runs:
        memory = "whole" if p.memory is None else f"{p.memory} MiB"
        where = f"{','.join(p.placed) or '-'} at {p.start:.1f}s"
        rows.append(
            (
                str(p.priority + 1),
                p.spec.id,
                str(p.devices),
                memory,
                f"{p.expected:.1f}s",
                "recorded" if p.recorded else "timeout",
                where,
            )
        )
    lines += table(rows)
    if plan.skipped:
        lines += ["", "skipped:"]
        lines += [f"  {p.spec.id}: {p.skip}" for p in plan.skipped]
    if plan.notes:
        lines += ["", "pulled in:", *(f"  {note}" for note in plan.notes)]
    lines += [
        "",
        f"{len(plan.runs)} to run on {at_once} worker{'s' if at_once != 1 else ''}, {plan.order}: "
        f"expected makespan {plan.simulated:.1f}s; lower bound {plan.lower_bound:.1f}s (runs that cannot overlap "
        "in series, device-memory-seconds / devices, seconds / workers)",
    ]
    return lines


def cmd_plan(args: argparse.Namespace) -> int:
    paths = _spec_paths(args, args.specs)
    specs = load_valid_specs(paths, Path.cwd())
    context = _setup(args, paths, for_run=False)
    if args.changed_since:
        chosen = selection.decisions(specs, Path.cwd(), args.changed_since)
        print("\n".join(selection.describe(specs, chosen, args.changed_since)))
        running = with_partners(specs, {spec.id for spec in specs if chosen[spec.id].run})
        specs = [spec for spec in specs if spec.id in running]
        context.values["changed_since"] = None  # chosen already
    print("\n".join(describe_plan(plan_run(specs, context), getattr(args, "workers", None))))
    return EXIT_OK


def pytest_arguments(
    args: argparse.Namespace, workers: int, run_dir: Path, extra: list[str], paths: list[Path]
) -> list[str]:
    """pytest's command line with `workers` xdist workers (0: none); `paths` are the spec folders and
    files to collect besides any in `extra`."""
    # pytest's cache (--lf, --ff) lives beside the recorded durations, outside the repository.
    cache = cache_root(Path.cwd()) / "pytest"
    argv = [
        *(str(p) for p in paths),
        "-p",
        "harness.plugin",
        "--strict-markers",
        "--assert=plain",
        "-o",
        f"cache_dir={cache}",
        "-o",
        "console_output_style=classic",
    ]
    argv += [f"--specs={p}" for p in paths]
    argv += [
        "--run-dir",
        str(run_dir),
        "--junitxml",
        str(run_dir / "junit.xml"),
        "-o",
        "junit_suite_name=trainspec",
        "-rfEsw",
    ]
    for option in backends.run_options():
        if option.pytest and option.name != "run_dir":
            argv += option.to_argv(getattr(args, option.name, None))
    # Specs that share a device run side by side, one worker each: the plan says how many go at once.
    argv += ["-n", str(workers)] if workers > 0 else ["-p", "no:xdist"]
    return argv + extra


def cmd_run(args: argparse.Namespace, extra: list[str]) -> int:
    import pytest

    repo = Path.cwd()
    # Named first, not as the run is set up: a run interrupted while it reads thousands of specs writes its
    # results.json there all the same.
    args.run_dir = str(Path(args.run_dir).resolve() if args.run_dir else default_run_dir(repo))
    named = named_spec_files([a for a in extra if not a.startswith("-")])
    # Spec files named on the command line run alone, unless --specs asks for more.
    paths = _spec_paths(args, args.specs) if args.specs or not named else []
    specs = load_valid_specs(paths + named, repo)
    # The specs' own secrets too: pytest's output (an internal error's `-l` locals) may show a run's environment.
    terminal.guard(masker_for(os.environ, *(spec.env for spec in specs)))
    try:
        history_location.from_values(vars(args), repo)
    except history_location.LocationError as error:
        raise UsageError(str(error)) from None
    context = _setup(args, paths + named, for_run=True)
    try:
        plan = plan_run(specs, context)
        run_dir, inventory = context.run_dir, context.inventory
        print(f"trainspec: {inventory.describe()}; run directory {run_dir}", flush=True)
        if not os.environ.get("NOX_CURRENT_SESSION"):
            # Outside nox the specs' {python} is whatever ran the harness, with whatever it has installed.
            print(
                f"trainspec: {{python}} is {sys.executable} (not a nox session's venv: `nox -s smoke`, `standard` or"
                " `full` run the specs with the pinned torch, transformers and `install` of [tool.trainspec])",
                flush=True,
            )
        if inventory.kind in GPU_KINDS and (others := context.pool.others()):
            print(
                f"trainspec: another run holds devices of this run ({'; '.join(others)}); specs wait for them",
                flush=True,
            )
        began = time.time()
        code = pytest.main(
            pytest_arguments(args, plan.workers, run_dir, extra, paths), plugins=[Prepared(context, plan)]
        )
        if int(code) == pytest.ExitCode.INTERRUPTED:
            _interrupted_before_pytest(run_dir, began)  # interrupted as pytest set up, before its records were written
    finally:
        release(context.run_dir)
    if written_since(run_dir / "results.json", began):
        print(f"trainspec: results in {run_dir / 'results.json'}", flush=True)
    if int(code) == 0 and (empty := _nothing_ran(run_dir)):
        print(
            f"trainspec: {empty}"
            + ("; accepted (--allow-skips)" if args.allow_skips else "; --allow-skips accepts such a run"),
            flush=True,
        )
        return EXIT_OK if args.allow_skips else EXIT_NOTHING_RAN
    return {0: EXIT_OK, 1: EXIT_FAILED, 2: EXIT_INTERRUPTED, 5: EXIT_OK}.get(int(code), EXIT_USAGE)


def written_since(path: Path, began: float) -> bool:
    """Whether this run wrote `path` (a reused run directory may hold an earlier run's)."""
    try:
        return path.stat().st_mtime >= began - 1  # coarse file-system clocks
    except OSError:
        return False


def _nothing_ran(run_dir: Path) -> str | None:
    """Why nothing ran, when every spec of the run was skipped (selected by -k or a tier, then not runnable here)."""
    from harness.records import load_document

    try:
        return nothing_ran(load_document(run_dir / "results.json").specs)
    except (OSError, ValueError):
        return None


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    print("\n".join(table(rows)))


def main(argv: Sequence[str] | None = None) -> int:
    interrupt_on_termination()
    terminal.guard(masker_for(os.environ))
    began = time.time()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        apply_settings(args, load_settings(Path.cwd()))
        if args.command == "run":
            return cmd_run(args, extra)
        return {
            "list": cmd_list,
            "validate": cmd_validate,
            "plan": cmd_plan,
            "schema": cmd_schema,
            "perplexity": cmd_perplexity,
            "serve": cmd_serve,
            "report": cmd_report,
            "init": cmd_init,
            "baseline": cmd_baseline,
            "history": history_cli.cmd_history,
            "bisect": history_cli.cmd_bisect,
            "logs": logs_cli.cmd_logs,
        }[args.command](args)
    except (UsageError, SpecError, selection.SelectionError, history_cli.CommandError) as error:
        print(f"error: {error}".replace("\n", "\nerror: "), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.command == "run" and getattr(args, "run_dir", None):
            _interrupted_before_pytest(Path(args.run_dir), began)
        return EXIT_INTERRUPTED


def _interrupted_before_pytest(run_dir: Path, began: float) -> None:
    """Interrupted before pytest wrote its records (reading, checking or planning the specs): say so in results.json."""
    try:
        problem = run_dir_problem(run_dir, Path.cwd())
    except OSError:  # the start folder is gone: no repository to place the run dir against
        return
    if problem is None and (
        path := record_interruption(run_dir, began, {"argv": masker_for(os.environ).data(sys.argv[1:])})
    ):
        print(f"trainspec: interrupted before any spec started; results in {path}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
