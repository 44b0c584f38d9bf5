"""Where a repository's caches and run directories live, and the small caches runs share.

Everything here sits outside the repository under test: one folder per repository path
(TRAINSPEC_CACHE_DIR, else the user's cache), holding recorded durations and peak GPU
memory by spec id, and the default run directories.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import tempfile
import warnings
from pathlib import Path

from filelock import FileLock

from harness.atomic import KeptFileWarning, atomic_write_text, read_json


def cache_root(repo: Path) -> Path:
    """Where recorded durations live: outside the repository, one folder per repository path."""
    explicit = os.environ.get("TRAINSPEC_CACHE_DIR")
    if explicit:
        return Path(explicit).resolve()
    base = user_cache()
    digest = hashlib.sha256(str(repo.resolve()).encode()).hexdigest()[:10]
    return base / "trainspec" / f"{repo.resolve().name}-{digest}"


def user_cache() -> Path:
    """XDG_CACHE_HOME when it is an absolute path (the XDG rule), else ~/.cache; without a home, the temp folder."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg)
    try:
        return Path.home() / ".cache"
    except RuntimeError:
        return Path(tempfile.gettempdir()) / f"cache-{os.getuid()}"


def lease_dir() -> Path:
    """Where the machine's device leases live: one place for every run of every repository
    (TRAINSPEC_LEASE_DIR, e.g. a folder every user of a shared machine can write, else the user's cache)."""
    explicit = os.environ.get("TRAINSPEC_LEASE_DIR")
    return Path(explicit).resolve() if explicit else user_cache() / "trainspec" / "leases"


def default_run_dir(repo: Path) -> Path:
    """A fresh run directory under the cache, named by time so runs sort in order."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return cache_root(repo) / "runs" / f"{stamp}-{os.getpid()}"


class DurationCache:
    """Seconds each spec last took (or, in a subclass, another number), by spec id, shared by every run of one
    repository.

    A damaged cache (garbage, a folder in its place) never fails a run or a plan: it reads
    as empty with one KeptFileWarning warning, and the next record replaces it (or, for a
    folder, warns that the durations were not saved).
    """

    what, cache_name = "durations", "duration cache"

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, float]:
        data = read_json(self.path, self.cache_name) or {}
        return {
            k: float(v)
            for k, v in data.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        }

    def record(self, durations: dict[str, float]) -> None:
        if not durations:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.path) + ".lock"), warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore", KeptFileWarning
                )  # said once by the run's load(); this write replaces the file
                merged = {**self.load(), **durations}
                atomic_write_text(self.path, json.dumps(merged, indent=1, sort_keys=True))
        except OSError as error:
            warnings.warn(
                f"{self.path}: {self.what} not saved ({type(error).__name__}: {error})", KeptFileWarning, stacklevel=2
            )


class PeakMemoryCache(DurationCache):
    """Peak GPU memory (MiB, on the spec's busiest device) each spec last used on real GPUs, by spec id."""

    what, cache_name = "peak GPU memory", "peak GPU memory cache"
