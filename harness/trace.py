"""A spec's dependencies: the repository files its processes used, read back from their traces, and hashed.

Each Python process a spec starts writes one trace at exit (harness/child_site/sitecustomize.py:
the modules it imported and the files it opened for reading, repository-relative). Here they
are merged with what tracing cannot see (the spec's `watch` globs), the spec file itself and
the pins every run shares (`PINS`), and each file gets a content hash. Also here: the library
versions a run used, those installed and those a child recorded it imported.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import platform
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from harness.spec.model import Spec

TRACE_DIR = "trace"  # inside a spec's output dir
# Files every spec depends on: they pin the libraries the runs use.
PINS = ("pyproject.toml", "noxfile.py")
MISSING = "missing"
_CHUNK = 1 << 20


def traced_files(trace_dir: Path) -> list[str] | None:
    """Every repository file the spec's processes used, or None when no process left a trace
    (a command that started no Python, or one killed before it could write)."""
    found: set[str] = set()
    traces = sorted(trace_dir.glob("trace-*.json"))
    read = 0
    for path in traces:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):
            continue
        files = data.get("files") if isinstance(data, dict) else None
        if isinstance(files, list):
            read += 1
            found.update(f for f in files if isinstance(f, str) and _inside(f))
    return sorted(found) if read else None


def _inside(relative: str) -> bool:
    """A trace names repository-relative paths; anything else (hand-made, hostile) is dropped."""
    return bool(relative) and not relative.startswith(("/", "../")) and "/../" not in relative and relative != ".."


def file_hash(path: Path) -> str:
    """sha256 of the content; MISSING when the file is gone (a deletion is a change too)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return MISSING
    except OSError as error:
        return f"unreadable: {error.strerror}"
    return digest.hexdigest()


def hash_files(repo: Path, relative: Iterable[str]) -> dict[str, str]:
    return {name: file_hash(repo / name) for name in sorted(set(relative))}


@lru_cache(maxsize=256)
def watch_regex(pattern: str) -> re.Pattern[str]:
    """A watch glob as a regular expression over repository-relative paths, as glob.glob reads it:
    `*` and `?` stay inside one folder, `**` crosses any number of them."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def watch_match(path: str, patterns: Iterable[str]) -> str | None:
    """The first watch glob that `path` (repository-relative) matches, else None."""
    return next((p for p in patterns if watch_regex(p).match(path)), None)


def watched_files(repo: Path, patterns: Iterable[str]) -> list[str]:
    """The files in the tree that the watch globs name now."""
    found: set[str] = set()
    for pattern in patterns:
        for name in glob.glob(pattern, root_dir=repo, recursive=True):
            if (repo / name).is_file() and not name.startswith(".git/"):
                found.add(Path(name).as_posix())
    return sorted(found)


def spec_file(spec: Spec, repo: Path) -> str | None:
    """The spec's file, repository-relative; None for a spec kept outside the repository."""
    try:
        return spec.source.resolve().relative_to(repo.resolve()).as_posix()
    except ValueError:
        return None


def untraced_files(spec: Spec, repo: Path) -> list[str]:
    """What counts without a trace: the watch globs' files now, the pins there are, and the spec file."""
    own = spec_file(spec, repo)
    return [*watched_files(repo, spec.watch), *(pin for pin in PINS if (repo / pin).is_file()), *([own] if own else [])]


def dependencies(spec: Spec, repo: Path, traced: Iterable[str]) -> dict[str, str]:
    """What the spec depends on now, with content hashes: traced ∪ watch ∪ its spec file ∪ the pins."""
    return hash_files(repo, [*traced, *untraced_files(spec, repo)])


# ---------------------------------------------------------------- library versions


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_cuda() -> str | None:
    """torch's CUDA build, read from torch/version.py without importing torch."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text()
    except OSError:
        return None
    match = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return match.group(1) if match else None


def environment_versions() -> dict[str, str | None]:
    """Versions installed in the environment the runs use (no import of torch)."""
    return {
        "python": platform.python_version(),
        "torch": _package_version("torch"),
        "transformers": _package_version("transformers"),
        "cuda": _torch_cuda(),
    }


def read_child_versions(path: Path) -> dict[str, str | None]:
    """What the child recorded it imported (harness/child_site); empty when it imported neither library."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # the child may write anything there
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        key: value if isinstance(value := data.get(key), str) else None
        for key in ("python", "torch", "transformers", "cuda")
    }
