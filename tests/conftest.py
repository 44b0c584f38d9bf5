"""Shared helpers: run the real harness as a user would, in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]


def gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def fresh_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -c CODE ARGS` in a fresh interpreter (nothing this test process imported), with this checkout's
    harness importable."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tagged(tag: str) -> list[str]:
    """Live processes whose command line carries `tag`, as `pid: cmdline`: what a test left running."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if tag in " ".join(proc.info["cmdline"] or []):
            found.append(f"{proc.pid}: {' '.join(proc.info['cmdline'])}")
    return found


class HarnessRun:
    def __init__(self, proc: subprocess.CompletedProcess, run_dir: Path):
        self.proc = proc
        self.run_dir = run_dir
        self.code = proc.returncode
        self.output = proc.stdout + proc.stderr

    @property
    def results(self) -> dict:
        return json.loads((self.run_dir / "results.json").read_text())

    def spec(self, spec_id: str) -> dict:
        return next(s for s in self.results["specs"] if s["id"] == spec_id)


@pytest.fixture
def harness(tmp_path: Path):
    """Run `python -m harness ARGS` in `cwd` with a private cache and run directory."""
    counter = iter(range(1000))

    def run(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: float = 600) -> HarnessRun:
        run_dir = tmp_path / f"run{next(counter)}"
        full_env = {**os.environ, "TRAINSPEC_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", **(env or {})}
        extra = ["--run-dir", str(run_dir)] if args and args[0] == "run" else []
        proc = subprocess.run(
            [sys.executable, "-m", "harness", *args, *extra],
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return HarnessRun(proc, run_dir)

    return run


@pytest.fixture(scope="session")
def tinylm_scorer(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The example's reference scorer: TRAINSPEC_SCORER when it names one (nox builds and
    caches it), else built here (about 15 s)."""
    given = os.environ.get("TRAINSPEC_SCORER")
    if given and Path(given, "config.json").is_file():
        return given
    path = tmp_path_factory.mktemp("scorer") / "tinylm"
    subprocess.run(
        [sys.executable, str(REPO / "examples" / "tinylm" / "build_scorer.py"), "--output", str(path)],
        check=True,
        capture_output=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    return str(path)


def forgather_on_path(folder: Path) -> Path:
    """A bin folder in `folder` holding tests/e2e/forgather_stand_in.py as `forgather`; put it first on PATH."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "forgather"
    shutil.copy(REPO / "tests" / "e2e" / "forgather_stand_in.py", stand_in)
    stand_in.chmod(0o755)
    return bin_dir


@pytest.fixture(scope="session")
def postgres_server_url():
    """A real PostgreSQL server for this test session (tests/postgres_server.py); skips where there is none."""
    from tests.postgres_server import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty history store on each engine: a SQLite file, a fresh database on the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.sqlite'}"
    from tests.postgres_server import fresh_database

    return fresh_database(request.getfixturevalue("postgres_server_url"), f"h{os.getpid()}_{tmp_path.name}".lower())
