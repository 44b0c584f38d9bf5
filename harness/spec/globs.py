"""The globs a spec gives (`expected_files`, `log.path`, `watch`): which are valid, and what they match.

pathlib's own glob recurses once per folder level and once per `**`, so an output tree 1,500
folders deep, or a pattern of 200 `**/`, ends in RecursionError. Matching here walks the tree
with a stack of its own, each (folder, pattern position) once, with pathlib's meaning: `*`,
`?` and `[...]` within one name (dot files included), `**` for any number of folders, never
through a symbolic link, and a trailing `**` for folders only.
"""

from __future__ import annotations

import os
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath


def glob_problem(pattern: str) -> str | None:
    """Why `pattern` is no glob the harness can search with, or None.

    `**` matches any depth only as a whole path component, and once in a row is all it takes.
    """
    parts = pattern.replace("\\", "/").split("/")
    shown = repr(pattern) if len(pattern) <= 80 else f"{pattern[:40]!r}... ({len(pattern)} characters)"
    for index, part in enumerate(parts):
        if "**" in part and part != "**":
            fixed = "/".join([*parts[:index], "**/" + part.replace("**", "*"), *parts[index + 1 :]])
            return f"{shown}: '**' must be a whole path component, as in {fixed!r}"
    if any(part == following == "**" for part, following in zip(parts, parts[1:], strict=False)):
        return f"{shown}: '**' repeats itself ('**/**'); one '**' already matches any depth"
    return None


def _entries(folder: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError:  # gone, unreadable, or a path longer than the system takes
        return []


def _is_dir(entry: os.DirEntry[str], follow: bool) -> bool:
    try:
        return entry.is_dir(follow_symlinks=follow)
    except OSError:
        return False


def find(root: Path, pattern: str) -> list[Path]:
    """The paths below `root` that `pattern` matches, sorted; nothing when root is no folder."""
    parts = PurePosixPath(pattern.replace("\\", "/")).parts
    if not parts or parts[0] == "/":
        return []
    found: set[str] = set()
    seen: set[tuple[str, int]] = set()
    stack = [(str(root), 0)]
    while stack:
        folder, index = stack.pop()
        if (folder, index) in seen:
            continue
        seen.add((folder, index))
        part, last = parts[index], index == len(parts) - 1
        if part == "**":
            if last:
                found.add(folder)
            else:
                stack.append((folder, index + 1))
            # One folder deeper for the same `**`; a linked folder is not entered (pathlib's rule, and no loops).
            stack += [(entry.path, index) for entry in _entries(folder) if _is_dir(entry, follow=False)]
            continue
        for entry in _entries(folder):
            if not fnmatchcase(entry.name, part):
                continue
            if last:
                found.add(entry.path)
            elif _is_dir(entry, follow=True):
                stack.append((entry.path, index + 1))
    return sorted(Path(path) for path in found)
