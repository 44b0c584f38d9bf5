"""A run that failed on `No module named X` outside nox: which interpreter ran it, and the nox session whose venv
installs X (or that none does).

Outside nox, a spec's `{python}` is whatever interpreter ran the harness, so a missing module is
usually not the project's fault but the environment's. The settings are read straight from
`[tool.trainspec]` (only the keys that say what a session installs).
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

from harness.checks.after_run import CheckResult

MISSING = re.compile(r"ModuleNotFoundError: No module named '([\w.]+)'")


def session_requirements(repo: Path) -> list[str]:
    """What the tier sessions install beside the harness: the pinned libraries and `install`."""
    try:
        section = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8")).get("tool", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    settings = section.get("trainspec", {}) if isinstance(section, dict) else {}
    if not isinstance(settings, dict):
        return []
    pinned = [f"{name}=={settings[name]}" for name in ("torch", "transformers") if isinstance(settings.get(name), str)]
    return pinned + [r for r in settings.get("install", []) if isinstance(r, str)]


def _distribution(requirement: str) -> str:
    name = re.match(r"\s*(?:-e\s+)?([A-Za-z0-9_.\-]+)", requirement)
    return re.sub(r"[-_.]+", "_", name.group(1)).lower() if name else ""


def session_hint(module: str, tier: str, repo: Path) -> str:
    """Which interpreter ran the spec, and the nox session that has `module` (or that none installs it)."""
    top = module.split(".", 1)[0].lower()
    found = next((r for r in session_requirements(repo) if _distribution(r) == top), None)
    where = f"{{python}} is {sys.executable}, not a nox session's venv"
    if found:
        return f"{where}: `nox -s {tier}` runs this spec in a venv that installs {found}"
    return f"{where}, and no nox session installs {top}: add it to `install` in [tool.trainspec] of pyproject.toml"


def with_session_hint(checks: list[CheckResult], tier: str, repo: Path) -> list[CheckResult]:
    """The checks, the root error `No module named X` followed by the session hint when the harness runs outside nox."""
    if os.environ.get("NOX_CURRENT_SESSION"):
        return checks
    for index, check in enumerate(checks):
        if check.cause and (missing := MISSING.search(check.cause)):
            hinted = f"{check.cause} ({session_hint(missing.group(1), tier, repo)})"
            return [*checks[:index], replace(check, cause=hinted), *checks[index + 1 :]]
    return checks
