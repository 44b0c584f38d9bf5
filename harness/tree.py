"""The repository-unchanged proof: a run must not write into the repository it tests.

Runs happen in place (the spec's cwd is in the repository), so a training script that
writes next to itself would dirty the tree unnoticed. The controller asks git which paths
differ from the index before and after the run, with their size and modification time,
and fails the run naming any path that appeared or changed. Paths git ignores are not
seen, and an untracked folder counts as one entry (`git status` with untracked files in
"normal" mode, which stays fast next to an unignored virtualenv). Outside git there is
nothing to compare and the check is skipped.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

Snapshot = dict[str, tuple[int, int] | None]


def snapshot(repo: Path) -> Snapshot | None:
    """Changed and untracked paths with (size, mtime_ns); None when `repo` is not in a git work tree."""
    try:
        status = subprocess.run(["git", "status", "--porcelain=v1", "-z", "--untracked-files=normal"], cwd=repo, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if status.returncode != 0:
        return None
    entries = status.stdout.decode("utf-8", errors="replace").split("\0")
    paths, index = [], 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":
            index += 1  # a rename or copy is followed by its source path
    return {path: _stat(repo / path) for path in paths}


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def written(before: Snapshot, after: Snapshot, repo: Path, allowed: list[Path]) -> list[str]:
    """Paths that appeared or changed during the run, outside the allowed folders (the run dir)."""
    def allowed_path(path: str) -> bool:
        full = (repo / path).resolve()
        return any(full == folder or folder in full.parents for folder in allowed)

    return sorted(path for path, state in after.items() if before.get(path, "absent") != state and not allowed_path(path))
