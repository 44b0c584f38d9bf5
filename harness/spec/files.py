"""Spec files: found in folders, loaded through their runner profile, checked as a set.

A profile turns spec files of one convention into commands (Forgather's `project_dir` +
`config` load unchanged); ids are unique across every file of a run; markers are strict
(registered in pyproject.toml); a tier is a predicate on a spec's markers.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.spec.compared import cycles, repeat_ids
from harness.spec.model import BUILTIN_MARKERS, SPEC_SUFFIXES, Spec
from harness.spec.typed_yaml import Located, Problem, SpecError, build, load_yaml


def in_tier(spec: Spec, tier: str | None) -> bool:
    """smoke: the specs marked smoke; standard: every tier-marked spec that is not slow (smoke ones too); full: all."""
    markers = set(spec.all_markers)
    if tier == "smoke":
        return "smoke" in markers
    if tier == "standard":
        return "integration" in markers and "slow" not in markers
    return True


def marker_names(lines: Iterable[object]) -> list[str]:
    """Marker names from pytest's `markers` lines (`name(args): doc`)."""
    return [line.split(":")[0].split("(")[0].strip() for line in lines if isinstance(line, str)]


def registered_markers(repo: Path) -> list[str]:
    """Markers registered in the repository's pytest configuration (pyproject.toml)."""
    try:
        data = tomllib.loads((repo / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return []
    return marker_names(data.get("tool", {}).get("pytest", {}).get("ini_options", {}).get("markers", []))


def split_duplicates(specs: Iterable[Spec]) -> tuple[list[Spec], list[SpecError]]:
    """The specs whose ids are first used, and an error (naming both places) for each later one reusing an id."""
    seen: dict[str, Spec] = {}
    errors: list[SpecError] = []
    for spec in specs:
        if spec.id in seen:
            first = seen[spec.id]
            errors.append(
                SpecError(
                    spec.source, "id", f"duplicate id {spec.id!r}, also used in {first.source}:{first.line}", spec.line
                )
            )
        else:
            seen[spec.id] = spec
    return list(seen.values()), errors


def named_spec_files(arguments: Iterable[str]) -> list[Path]:
    """Spec files named on the command line (`run path/to/spec.yaml[::id]`) are collected wherever they are.

    Folders are not: a test folder may hold YAML that is not a spec.
    """
    return [Path(a.split("::")[0]) for a in arguments if Path(a.split("::")[0]).suffix in SPEC_SUFFIXES]


@dataclass(frozen=True)
class Profile:
    """How spec files of one convention become a command, with that convention's defaults."""

    name: str
    defaults: dict[str, Any]
    build_command: Callable[[Spec], list[str]]


def _command_argv(spec: Spec) -> list[str]:
    return spec.argv_template


def _forgather_argv(spec: Spec) -> list[str]:
    return ["forgather", "-p", str(spec.project_dir), "-t", str(spec.config), "train", "--output-dir", "{output_dir}"]


PROFILES = {
    "command": Profile("command", {}, _command_argv),
    "forgather": Profile(
        "forgather",
        {"expected_files": ["trainer_logs.json"], "markers": ["integration"], "log": {"format": "forgather"}},
        _forgather_argv,
    ),
}


def _profile_name(data: dict) -> str:
    named = data.get("profile")
    if isinstance(named, str) and named in PROFILES:
        return named
    return "forgather" if "project_dir" in data and "config" in data and "command" not in data else "command"


def spec_from_mapping(data: Any, source: Path) -> Spec:
    """Validate one YAML mapping into a Spec; every problem raises a located SpecError."""
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        raise SpecError(source, None, f"a spec is a YAML mapping of fields, found {found}", 1)
    profile = PROFILES[_profile_name(data)]
    merged = Located({**profile.defaults, **data}, line=getattr(data, "line", 1))
    merged.lines = dict(getattr(data, "lines", {}))
    merged.setdefault("profile", profile.name)
    try:
        spec = build(Spec, merged, "", merged.line)
    except Problem as problem:
        raise SpecError(source, problem.field, problem.message, problem.line) from None
    return replace(spec, source=source, line=merged.line, key_lines=merged.lines)


def load_spec_file(path: Path) -> list[Spec]:
    """A file holds one spec (a mapping) or several (a list of mappings); a spec with `repeat: N` is N runs."""
    data = load_yaml(path)
    if isinstance(data, list):
        if not data:
            raise SpecError(path, None, "an empty list holds no spec", 1)
        return [run for item in data for run in with_repeats(spec_from_mapping(item, path))]
    return with_repeats(spec_from_mapping(data, path))


def with_repeats(spec: Spec) -> list[Spec]:
    """The spec, then one copy per further repeat: each its own item, output dir and record, so
    xdist spreads them over workers (and devices). The comparisons stay with the first run."""
    return [spec] + [
        replace(spec, id=run_id, parity=None, reproducible=None, repeat=1) for run_id in repeat_ids(spec)[1:]
    ]


def parity_cycles(specs: Iterable[Spec]) -> list[SpecError]:
    """An error for each cycle of parity declarations: one side of a comparison declares it."""
    by_id = {spec.id: spec for spec in specs}
    errors = []
    for cycle in cycles(by_id.values()):
        spec = by_id[cycle[0]]
        errors.append(
            SpecError(
                spec.source,
                "parity",
                f"parity cycle {' -> '.join(cycle)}: declare each comparison on one side only",
                spec.key_lines.get("parity", spec.line),
            )
        )
    return errors


def find_spec_files(paths: Iterable[Path]) -> list[Path]:
    """Spec files named directly, and every *.yaml / *.yml below named folders, sorted.

    A file reached twice (named, and inside a named folder) is read once.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(spec_files_below(path))
        elif path.is_file():
            found.append(path)
        else:
            raise SpecError(path, None, "no such file or folder")
    unique = {p.resolve(): p for p in reversed(found)}
    return [p for p in found if unique.get(p.resolve()) is p]


def spec_files_below(root: Path) -> Iterator[Path]:
    """The spec files below `root`, hidden entries left out, walked without recursion.

    A folder reached through a symbolic link is not entered: every real folder below root is
    reached by its own path, once, and a link may lead out of root or back into it (`l1 -> .`).
    A folder that cannot be read is a SpecError naming it, never a folder silently passed over.
    """
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as scan:
                entries = list(scan)
        except OSError as error:
            raise SpecError(folder, None, f"cannot read the folder: {error.strerror or error}") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = folder / entry.name
            if entry.is_dir(follow_symlinks=False):
                folders.append(path)
            elif path.suffix in SPEC_SUFFIXES and path.is_file():
                yield path


def load_specs(paths: Iterable[Path]) -> tuple[list[Spec], list[SpecError]]:
    """Every spec under `paths`, and every problem found (all of them, not just the first)."""
    specs: list[Spec] = []
    errors: list[SpecError] = []
    try:
        files = find_spec_files(paths)
    except SpecError as error:
        return [], [error]
    for file in files:
        try:
            specs += load_spec_file(file)
        except SpecError as error:
            errors.append(error)
    unique, duplicates = split_duplicates(specs)
    return unique, errors + duplicates + parity_cycles(unique)


def check_markers(spec: Spec, registered: Iterable[str]) -> None:
    """Markers are strict: a spec may only use markers the project registered."""
    known = set(registered) | set(BUILTIN_MARKERS)
    for marker in spec.markers:
        if marker not in known:
            raise SpecError(
                spec.source,
                "markers",
                f"{marker!r} is not a registered marker; register it under [tool.pytest.ini_options] markers "
                f"in pyproject.toml (registered: {', '.join(sorted(known))})",
                spec.key_lines.get("markers", spec.line),
            )


def check_in_repository(spec: Spec, repo: Path) -> None:
    """`cwd` and `project_dir` stay inside the repository once symbolic links are followed: the
    spec's own check reads only their text, and a link inside the repository may point anywhere."""
    root = repo.resolve()
    for name in ("cwd", "project_dir"):
        value = getattr(spec, name)
        if value is None:
            continue
        try:
            target = (repo / value).resolve()
        except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop
            raise SpecError(
                spec.source, name, f"{value!r} cannot be followed: {error}", spec.key_lines.get(name)
            ) from None
        if target != root and root not in target.parents:
            raise SpecError(
                spec.source,
                name,
                f"must stay inside the repository, found {value!r} which leads to {target} through a symbolic link",
                spec.key_lines.get(name, spec.line),
            )
