"""Where a run's history lives: `--history`, `history = "..."`, `--no-history`, else one SQLite file under the cache.

Standard library only, so the plugin can refuse a bad value before the run starts (exit 2)
without importing the SQL toolkit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.caches import cache_root

# Engines the store speaks through SQLAlchemy; the scheme names the driver too where one is needed.
SCHEMES = {
    "sqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}
DEFAULT_NAME = "history.sqlite"
# pyproject.toml's `history` extra says the same.
POSTGRES_DRIVER = "psycopg[binary]>=3.1"


class StoreError(Exception):
    """The history cannot be reached, read or written: one line naming the store (harness.history.store raises it)."""


class LocationError(ValueError):
    """A `--history` value that names no store: bad usage, one line."""


def driver_requirements(value: str | None) -> list[str]:
    """What a venv that runs the specs must install to reach the store `value` names (the SQLite driver is built in)."""
    return [POSTGRES_DRIVER] if value and value.partition("://")[0].lower().startswith("postgres") else []


def default_path(repo: Path) -> Path:
    return cache_root(repo) / DEFAULT_NAME


def resolve(value: str | None, repo: Path) -> str:
    """The SQLAlchemy URL of the store: a URL as given (driver filled in), a path made absolute against `repo`."""
    if not value:
        return f"sqlite:///{default_path(repo)}"
    if "://" not in value:
        return f"sqlite:///{(repo / Path(value).expanduser()).resolve()}"
    scheme, _, rest = value.partition("://")
    driver = SCHEMES.get(scheme.lower())
    if driver is None:
        known = ", ".join(sorted({s.split("+")[0] for s in SCHEMES}))
        raise LocationError(f"--history {value!r}: unknown scheme {scheme!r} (a file path, or a URL of {known})")
    if driver == "sqlite" and not rest.lstrip("/"):
        raise LocationError(f"--history {value!r}: a sqlite URL needs a file, e.g. sqlite:////abs/path/history.sqlite")
    return f"{driver}://{rest}"


def from_values(values: dict[str, Any], repo: Path) -> str | None:
    """The store a run appends to, or None with --no-history."""
    if values.get("no_history"):
        return None
    return resolve(values.get("history"), repo)


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    credentials, _, host = rest.partition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
