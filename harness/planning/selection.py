"""Running only what changed: `--changed-since REF` and `--skip-unchanged`, over a cache of each spec's last run.

After every run of a spec the pipeline stores its dependencies (harness.trace) in one small
JSON file per spec under `<cache>/selection/`, with the fingerprints of its recent passes
(of everything that could change its outcome; several, so the sessions of a version matrix
do not evict each other's). `--changed-since` runs the specs whose
dependencies meet the files git reports changed since REF; `--skip-unchanged` reuses a pass
whose fingerprint still matches. The folder can be saved and restored by CI (docs/ci.md):
entries are written whole, a damaged one is ignored with one warning, and a missing one
only means the spec runs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness import __version__
from harness.atomic import atomic_write_text, read_json
from harness.caches import cache_root
from harness.context import RunContext
from harness.records import SpecResult
from harness.spec.model import Spec
from harness.trace import (
    PINS,
    TRACE_DIR,
    dependencies,
    file_hash,
    hash_files,
    spec_file,
    traced_files,
    untraced_files,
    watch_match,
)

FORMAT = "trainspec-selection/1"
DEFAULT_DAYS = 7
KEPT_PASSES = 16
# Run options that change what a passing run proves: a reuse under other ones would prove less.
CHECKED_OPTIONS = ("scorer", "missing_scorer", "tolerance", "backend")


class SelectionError(Exception):
    """--changed-since cannot be answered (not a git repository, an unknown REF): bad usage, exit 2."""


@dataclass(frozen=True)
class Entry:
    """What the cache keeps of a spec's last run."""

    traced: bool  # some process of it left a trace (else only watch globs say what it read)
    dependencies: dict[str, str]
    run: str
    at: str
    # Fingerprint -> {"run": run dir, "at": ISO time} of each recent pass.
    passes: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    run: bool
    why: str


def _folder(repo: Path) -> Path:
    return cache_root(repo) / "selection"


def load_entry(repo: Path, spec_id: str) -> Entry | None:
    data = read_json(_folder(repo) / f"{spec_id}.json", f"selection cache entry of {spec_id}")
    if data is None:
        return None
    try:
        entry = Entry(**{f.name: data[f.name] for f in fields(Entry) if f.name in data})
        if (
            data.get("format") == FORMAT
            and _strings(entry.dependencies)
            and isinstance(entry.passes, dict)
            and all(_strings(p) for p in entry.passes.values())
        ):
            return entry
    except TypeError:
        pass
    return None


def _strings(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _save(repo: Path, spec_id: str, entry: Entry) -> None:
    folder = _folder(repo)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            folder / f"{spec_id}.json", json.dumps({"format": FORMAT, **asdict(entry)}, indent=1, sort_keys=True)
        )
    except OSError:
        pass  # a cache that cannot be written costs the next run its reuse, never this run's verdict


# ---------------------------------------------------------------- fingerprints


def environment_facts(context: RunContext) -> dict[str, Any]:
    """What a pass depends on besides the files: the harness, the libraries, the devices, the checking options."""
    inventory = context.inventory
    baseline = context.baseline
    return {
        "harness": __version__,
        "versions": {key: context.versions.get(key) for key in ("python", "torch", "transformers", "cuda")},
        "device_kind": inventory.kind,
        "device_count": inventory.count,
        "device_models": sorted({f"{f.name} {f.memory_total}" for f in inventory.facts if f.name}),
        "options": {key: context.values.get(key) for key in CHECKED_OPTIONS},
        "baseline": file_hash(Path(baseline) / "results.json" if Path(baseline).is_dir() else Path(baseline))
        if baseline
        else None,
    }


def spec_content(spec: Spec) -> dict[str, Any]:
    """The spec as loaded, without where it was found: editing a neighbour in the same file leaves it alone."""
    return {f.name: getattr(spec, f.name) for f in fields(spec) if f.name not in ("source", "line", "key_lines")}


def fingerprint(spec: Spec, repo: Path, hashes: dict[str, str], environment: dict[str, Any]) -> str:
    own = spec_file(spec, repo)
    body = {
        "spec": spec_content(spec),
        "files": {k: v for k, v in sorted(hashes.items()) if k != own},
        "facts": environment,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------- after a run


def record_run(spec: Spec, context: RunContext, record: SpecResult, output_dir: Path) -> dict[str, str]:
    """Store the run's dependencies (and its fingerprint when it passed); return them for the record.

    A failure clears the pass of the same fingerprint: failures are never reused, and neither is a pass they contradict.
    """
    traced = traced_files(output_dir / TRACE_DIR)
    deps = dependencies(spec, context.repo, traced or [])
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    earlier = load_entry(context.repo, spec.id)
    passes = dict(earlier.passes) if earlier else {}
    if _knowable(traced is not None, spec):
        key = fingerprint(spec, context.repo, deps, environment_facts(context))
        # The run history tells flaky specs (passed and failed on one fingerprint) by it.
        record.fingerprint = key
        passes.pop(key, None)
        if record.outcome == "passed":
            passes[key] = {"run": str(context.run_dir), "at": now}
    recent = dict(sorted(passes.items(), key=lambda item: item[1].get("at", ""))[-KEPT_PASSES:])
    _save(context.repo, spec.id, Entry(traced is not None, deps, str(context.run_dir), now, recent))
    return deps


def _knowable(traced: bool, spec: Spec) -> bool:
    """Without a trace, only watch globs say what a run read: with neither, nothing does."""
    return traced or bool(spec.watch)


# ---------------------------------------------------------------- before a run


def reusable(spec: Spec, context: RunContext) -> str | None:
    """The skip reason when the spec passed before with the fingerprint it has now and the entry has not expired."""
    entry = load_entry(context.repo, spec.id)
    if entry is None or not entry.passes:
        return None
    hashes = hash_files(context.repo, [*entry.dependencies, *untraced_files(spec, context.repo)])
    passed = entry.passes.get(fingerprint(spec, context.repo, hashes, environment_facts(context)))
    if passed is None:
        return None
    days = context.values.get("unchanged_days") or DEFAULT_DAYS
    try:
        age = _dt.datetime.now(_dt.UTC) - _dt.datetime.fromisoformat(passed["at"])
    except (KeyError, TypeError, ValueError):
        return None
    if age > _dt.timedelta(days=days) or age < _dt.timedelta(0):
        return None
    return f"unchanged since it passed in {passed.get('run', '?')} at {passed['at']}"


def changed_files(repo: Path, ref: str) -> set[str]:
    """Files that differ between REF and the working tree: committed, staged, unstaged and untracked."""
    if ref.startswith("-"):
        raise SelectionError(f"--changed-since: {ref!r} is not a git revision")
    git = ["git", "-C", str(repo), "-c", "core.quotepath=off"]
    try:
        resolved = subprocess.run(
            [*git, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], capture_output=True, text=True, timeout=60
        )
        if resolved.returncode != 0:
            raise SelectionError(f"--changed-since: git knows no commit {ref!r} in {repo}")
        diff = subprocess.run(
            [*git, "diff", "--name-only", "--no-renames", "--relative", "-z", resolved.stdout.strip(), "--"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        others = subprocess.run(
            [*git, "ls-files", "-z", "--others", "--exclude-standard"], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SelectionError(f"--changed-since: cannot ask git about {repo}: {error}") from None
    for proc in (diff, others):
        if proc.returncode != 0:
            raise SelectionError(
                f"--changed-since: git failed in {repo}: "
                f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f'exit {proc.returncode}'}"
            )
    return {name for name in (diff.stdout + others.stdout).split("\0") if name}


def decide(spec: Spec, repo: Path, changed: set[str], entry: Entry | None) -> Decision:
    """Whether the spec runs under --changed-since, and the changed file (or the missing trace) that decided it."""
    for pin in PINS:
        if pin in changed:
            return Decision(True, f"{pin} changed (it pins every spec's libraries)")
    own = spec_file(spec, repo)
    if own in changed:
        return Decision(True, f"{own} changed (its spec file)")
    for path in sorted(changed):
        if pattern := watch_match(path, spec.watch):
            return Decision(True, f"{path} changed (watch {pattern})")
    if entry is None:
        return Decision(True, "no recorded trace: it has not run here yet (or the cache was cleared)")
    if not _knowable(entry.traced, spec):
        return Decision(True, "its last run left no trace (no Python process) and it has no watch globs")
    if hits := sorted(changed & set(entry.dependencies)):
        return Decision(
            True, f"{hits[0]} changed" + (f" (and {len(hits) - 1} more of its dependencies)" if len(hits) > 1 else "")
        )
    return Decision(False, f"none of its {len(entry.dependencies)} dependencies changed")


def decisions(specs: list[Spec], repo: Path, ref: str) -> dict[str, Decision]:
    changed = changed_files(repo, ref)
    return {spec.id: decide(spec, repo, changed, load_entry(repo, spec.id)) for spec in specs}


def describe(specs: list[Spec], decided: dict[str, Decision], ref: str) -> list[str]:
    """`harness plan --changed-since REF`: per spec, run or not, and why."""
    rows = [("spec", "verdict", "decided by")]
    rows += [
        (spec.id, "run" if decided[spec.id].run else "not run", decided[spec.id].why)
        for spec in sorted(specs, key=lambda s: s.id)
    ]
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"changed since {ref}:"] + [f"  {a.ljust(width[0])}  {b.ljust(width[1])}  {c}" for a, b, c in rows]
    return [*lines, ""]
