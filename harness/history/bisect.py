"""`harness bisect`: the first commit where a spec fails, by binary search between a good and a bad commit.

Each commit tested is checked out in a git worktree in a temporary folder outside the
repository, so the user's tree and index stay as they are, and the spec runs there through
`python -m harness run` with this interpreter and this harness (so only the project's code
differs between commits). A commit whose spec cannot be loaded or run at all is skipped, as
`git bisect skip` does, and a neighbour is tested instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.report.summary import table
from harness.spec.files import load_specs

HARNESS_ROOT = Path(__file__).resolve().parents[2]
# Exit codes of `harness run` that say nothing about the commit's code: bad specs or usage, nothing ran.
UNTESTABLE = (2, 5)


class BisectError(Exception):
    """Refs that do not name a range to search: one line, exit 2."""


@dataclass
class Verdict:
    commit: str
    subject: str
    failures: int = 0
    runs: int = 0
    values: list[str] = field(default_factory=list)
    skipped: str = ""
    reason: str = ""

    @property
    def bad(self) -> bool:
        return not self.skipped and 2 * self.failures >= self.runs > 0


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise BisectError(f"git {' '.join(args)}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    return done.stdout.strip()


def _spec_file(worktree: Path, spec_id: str, spec_paths: list[str]) -> Path | None:
    """The file that defines the spec at this commit, or None when it has none (or its specs do not load)."""
    specs, errors = load_specs([worktree / p for p in spec_paths])
    found = [spec.source for spec in specs if spec.id == spec_id]
    return Path(found[0]) if found and not errors else None


def _run_once(worktree: Path, spec_file: Path, spec_id: str, run_dir: Path, cache: Path) -> tuple[str, str, str]:
    """One run of the spec: ("passed" | "failed" | "untestable", final loss, reason)."""
    env = {
        **os.environ,
        # This harness, not the one (if any) in the commit's tree: -P keeps the worktree off sys.path.
        "PYTHONPATH": os.pathsep.join([str(HARNESS_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "TRAINSPEC_CACHE_DIR": str(cache),
    }
    argv = [sys.executable, "-P", "-m", "harness", "run", "--no-history", "--run-dir", str(run_dir)]
    done = subprocess.run(
        [*argv, f"{spec_file.relative_to(worktree)}::{spec_id}"],
        cwd=worktree,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if done.returncode == 130:
        raise KeyboardInterrupt
    if done.returncode in UNTESTABLE:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()
        return "untestable", "", last[-1][:160] if last else f"exit {done.returncode}"
    try:
        records = json.loads((run_dir / "results.json").read_text())["specs"]
        record = next(r for r in records if r["id"] == spec_id)
    except (OSError, ValueError, KeyError, StopIteration):
        return "untestable", "", f"exit {done.returncode} without a record of {spec_id}"
    loss = "-" if record.get("final_loss") is None else f"{record['final_loss']:.4g}"
    outcome = "passed" if record["outcome"] == "passed" else "failed"
    return outcome, loss, record.get("reason", "")[:160]


def _test(repo: Path, commit: str, spec_id: str, runs: int, scratch: Path, spec_paths: list[str]) -> Verdict:
    verdict = Verdict(commit, _git(repo, "show", "-s", "--format=%s", commit))
    worktree = scratch / commit[:12]
    _git(repo, "worktree", "add", "--detach", "--quiet", str(worktree), commit)
    try:
        spec_file = _spec_file(worktree, spec_id, spec_paths)
        if spec_file is None:
            verdict.skipped = f"no loadable spec {spec_id} at this commit"
            return verdict
        for k in range(runs):
            outcome, loss, reason = _run_once(
                worktree, spec_file, spec_id, scratch / "runs" / f"{commit[:12]}-{k}", scratch / "cache"
            )
            if outcome == "untestable":
                verdict.skipped = reason
                return verdict
            verdict.runs += 1
            verdict.failures += outcome == "failed"
            verdict.values.append(loss)
            verdict.reason = verdict.reason or (reason if outcome == "failed" else "")
        return verdict
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(worktree)], capture_output=True)


def _evidence(verdicts: list[Verdict], order: dict[str, int]) -> list[str]:
    rows = [("commit", "subject", "failed", "final loss", "verdict", "reason")]
    for v in sorted(verdicts, key=lambda v: order[v.commit]):
        state = "skipped" if v.skipped else ("bad" if v.bad else "good")
        rows.append(
            (
                v.commit[:10],
                v.subject[:40],
                f"{v.failures}/{v.runs}",
                ",".join(v.values) or "-",
                state,
                (v.skipped or v.reason)[:60],
            )
        )
    return table(rows)


def bisect(repo: Path, spec_id: str, good: str, bad: str, runs: int, spec_paths: list[str]) -> int:
    """Print the first bad commit between `good` and `bad` with the evidence; 0 when found, 1 when skips hide it.

    `spec_paths`: where the specs are, relative to the repository (the [tool.trainspec] specs setting).
    """
    good_commit, bad_commit = (
        _git(repo, "rev-parse", "--verify", f"{good}^{{commit}}"),
        _git(repo, "rev-parse", "--verify", f"{bad}^{{commit}}"),
    )
    if subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", good_commit, bad_commit]).returncode:
        raise BisectError(f"--good {good} is not an ancestor of --bad {bad}")
    commits = _git(repo, "rev-list", "--reverse", "--ancestry-path", f"{good_commit}..{bad_commit}").split()
    if not commits:
        raise BisectError(f"no commits between --good {good} and --bad {bad}")
    order = {commit: i for i, commit in enumerate(commits)}
    scratch = Path(tempfile.mkdtemp(prefix="trainspec-bisect-"))
    verdicts: list[Verdict] = []
    low, high = -1, len(commits) - 1  # good at low (the --good commit), bad at high
    skipped: set[int] = set()
    print(
        f"bisecting {spec_id}: {len(commits) - 1} commits between {good_commit[:10]} (good) and "
        f"{bad_commit[:10]} (bad), {runs} run{'s' if runs != 1 else ''} each",
        flush=True,
    )
    try:
        while True:
            untested = [i for i in range(low + 1, high) if i not in skipped]
            if not untested:
                break
            middle = (low + high) / 2
            pick = min(untested, key=lambda i: (abs(i - middle), i))
            verdict = _test(repo, commits[pick], spec_id, runs, scratch, spec_paths)
            verdicts.append(verdict)
            state = "skipped: " + verdict.skipped if verdict.skipped else ("bad" if verdict.bad else "good")
            print(f"  {commits[pick][:10]} {verdict.subject[:50]}: {state}", flush=True)
            if verdict.skipped:
                skipped.add(pick)
            elif verdict.bad:
                high = pick
            else:
                low = pick
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    spec_runs = sum(v.runs for v in verdicts)
    print("\n".join(_evidence(verdicts, order)))
    first = commits[high]
    if any(low < i < high for i in skipped):
        between = [commits[i][:10] for i in range(low + 1, high + 1)]
        print(
            f"the first bad commit is one of {', '.join(between)} (skipped commits hide which); {spec_runs} spec runs"
        )
        return 1
    print(f"first bad commit: {first} {_git(repo, 'show', '-s', '--format=%s', first)} ({spec_runs} spec runs)")
    return 0
