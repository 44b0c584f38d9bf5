"""Fixtures shared by the harness's unit tests: real files in tmp_path, a private cache."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


@pytest.fixture
def write(tmp_path: Path):
    """Write a (dedented) text file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private trainspec cache, so no test reads or writes the user's durations."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TRAINSPEC_CACHE_DIR", str(cache))
    return cache
