"""The repository-unchanged proof: a run must not write into the repository it tests.

Runs happen in place (the spec's cwd is in the repository), so a training script that
writes next to itself would dirty the tree unnoticed. The controller asks git which paths
differ from the index before and after the run, with their size and modification time,
and fails the run naming any path that appeared, changed or went away. git names an
untracked folder as one entry (`git status` with untracked files in "normal" mode, which
stays fast next to an unignored virtualenv), so the files inside each untracked folder are
listed too (at most MAX_FOLDER_FILES of them, skipping what git ignores): a file added
deep inside a folder that was already there is seen, and a run directory inside an
untracked folder is told apart from the rest of it. Paths git ignores are not seen. What
a run may plant in git's own folder to run later (hooks, `config`, `info/`) is compared too,
named as `.git/hooks/post-checkout`: the user's next checkout would run it.
Outside git there is nothing to compare and the check is skipped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

Snapshot = dict[str, tuple[int, int] | None]
# Enough for any data folder kept beside the code; a bigger untracked folder is compared up to here.
MAX_FOLDER_FILES = 20_000


def snapshot(repo: Path, skip: Iterable[Path] = ()) -> Snapshot | None:
    """Changed and untracked paths with (size, mtime_ns), the files inside untracked folders
    included (folders as `name/`, files under `skip` left out); None outside a git work tree."""
    status = _git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=normal")
    if status is None:
        return None
    entries = status.decode("utf-8", errors="replace").split("\0")
    paths, index = [], 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":
            index += 1  # a rename or copy is followed by its source path
    folders = [p for p in paths if p.endswith("/")]
    inside = _not_ignored(repo, _files_inside(repo, folders, [Path(s).resolve() for s in skip]))
    return {path: _stat(repo / path) for path in [*paths, *inside, *_git_own(repo)]}


def _git_own(repo: Path) -> list[str]:
    """What git reads and runs from its own folder (hooks, config, info/), as paths from the repository
    (absolute for a git folder elsewhere, as a worktree's common folder is)."""
    common = _git(repo, "rev-parse", "--git-common-dir")
    if common is None:
        return []
    git_dir = (repo / common.decode().strip()).resolve()
    found = [git_dir / "config"]
    for folder in ("hooks", "info"):
        for root, _, files in os.walk(git_dir / folder):
            found += [Path(root) / name for name in sorted(files)][:MAX_FOLDER_FILES]
    top = repo.resolve()
    return [(p.relative_to(top).as_posix() if top in p.parents else str(p)) for p in found[:MAX_FOLDER_FILES]]


def _git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes | None:
    try:
        done = subprocess.run(["git", *args], cwd=repo, input=stdin, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # check-ignore exits 1 when nothing given is ignored
    return done.stdout if done.returncode == 0 or (args[0] == "check-ignore" and done.returncode == 1) else None


def _files_inside(repo: Path, folders: list[str], skip: list[Path]) -> list[str]:
    """Files (and links) under the untracked folders, in a stable order, up to the bound."""
    found: list[str] = []
    for folder in sorted(folders):
        for root, dirs, files in os.walk(repo / folder):
            here = Path(root)
            dirs[:] = sorted(d for d in dirs if d != ".git" and (here / d).resolve() not in skip)
            for name in sorted(files):
                if len(found) >= MAX_FOLDER_FILES:
                    return found
                found.append((here / name).relative_to(repo).as_posix())
    return found


def _not_ignored(repo: Path, paths: list[str]) -> list[str]:
    """`paths` less those git ignores (a pattern can match inside a folder git lists as untracked)."""
    if not paths:
        return []
    ignored = _git(repo, "check-ignore", "-z", "--stdin", stdin="\0".join(paths).encode())
    dropped = set(ignored.decode("utf-8", errors="replace").split("\0")) if ignored else set()
    return [p for p in paths if p not in dropped]


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def repo_writes_since(before: Snapshot, after: Snapshot, repo: Path, allowed: list[Path]) -> list[str]:
    """Paths that appeared, changed or went away during the run, outside the allowed folders (the run dir).

    A folder is judged by the files inside it, never by its own entry, so a run dir two
    levels inside an untracked folder does not make the folder count as written. A folder
    that did not exist before and holds no allowed folder is named once, as `name/`.
    """

    def resolved(path: str) -> Path:
        return (repo / path).resolve()

    def allowed_path(path: str) -> bool:
        return any(resolved(path) == folder or folder in resolved(path).parents for folder in allowed)

    def holds_allowed(folder: str) -> bool:
        return any(resolved(folder) in a.parents for a in allowed)

    changed = set()
    for path in before.keys() | after.keys():
        if path.endswith("/") or allowed_path(path) or before.get(path, "absent") == after.get(path, "absent"):
            continue
        if path not in after and (repo / path).exists():
            continue  # still there: only past the bound on files inside untracked folders this time
        changed.add(path)
    for folder in (
        f for f in after if f.endswith("/") and f not in before and not allowed_path(f) and not holds_allowed(f)
    ):
        if any(p.startswith(folder) for p in changed):
            changed = {p for p in changed if not p.startswith(folder)} | {folder}
    return sorted(changed)


def run_dir_problem(run_dir: Path, repo: Path) -> str | None:
    """Why `run_dir` cannot hold a run of `repo`, or None: it must be neither the repository
    (outputs among the sources, and nothing left for the unchanged check to see) nor hold it."""
    where, tree = Path(run_dir).resolve(), Path(repo).resolve()
    if where == tree:
        return (
            f"the run directory {run_dir} is the repository itself ({tree}); outputs would land among its "
            "sources. Choose a folder outside it, or below it"
        )
    if where in tree.parents:
        return (
            f"the run directory {run_dir} contains the repository ({tree}); outputs would land among its "
            "sources. Choose a folder outside it, or below it"
        )
    return None
