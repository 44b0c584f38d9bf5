"""trainspec's own sessions: the tiers and the matrix come from [tool.trainspec] in
pyproject.toml through the same helpers any project uses (harness.project.nox_sessions); the harness's
own tests and the benchmark are defined here.

    nox -s smoke                      # every change
    nox -s standard                   # before merge
    nox -s full -- --gpus 2           # nightly; arguments after -- go to `python -m harness run`
    nox -t matrix -- --tier smoke     # a tier on every torch x transformers pair in the matrix
    nox -s tests                      # the harness's own test suite (CPU only)
    nox -s lint                       # ruff and mypy over the harness
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
# nox's own environment need not have the harness installed: use this checkout.
sys.path.insert(0, str(ROOT))

from harness.project.nox_sessions import define_sessions, install, pins  # noqa: E402

# psycopg: the history tests run against a real PostgreSQL server too (tests/postgres_server.py).
TEST_REQUIREMENTS = ("hypothesis>=6", "nox>=2024.3", "tensorboard>=2.12", "psycopg[binary]>=3.1")
# Pinned so a new release cannot turn CI red overnight; bump them together with the fixes.
LINT_REQUIREMENTS = ("ruff==0.17.6", "mypy==2.4.1", "types-PyYAML", "types-requests", "types-psutil")
nox.options.sessions = ["smoke", "tests"]
nox.options.reuse_venv = "yes"


def tinylm_scorer(session: nox.Session, transformers: str | None) -> str:
    """The example's reference scorer (a tinylm trained longer), built once per pin.

    Nothing is downloaded at run time, so the perplexity gate scores with a model built here,
    kept in nox's cache folder and keyed by the transformers pin (tokenizer files written by
    transformers 5 do not load in 4.x).
    """
    path = Path(session.cache_dir).resolve() / f"tinylm-scorer-transformers-{transformers}"
    session.run(
        "python", "examples/tinylm/build_scorer.py", "--output", str(path), env={"HF_HUB_OFFLINE": "1"}, silent=True
    )
    return str(path)


def scorer_for_inference(session: nox.Session, transformers: str | None, tier: str) -> list[str]:
    """Only the full tier has inference specs; a caller's TRAINSPEC_SCORER or `-- --scorer` wins."""
    if tier != "full" or os.environ.get("TRAINSPEC_SCORER"):
        return []
    return ["--scorer", tinylm_scorer(session, transformers)]


SETTINGS = define_sessions(ROOT, run_options=scorer_for_inference)


@nox.session
def tests(session: nox.Session) -> None:
    """The harness's own tests (CPU only); arguments after -- go to pytest."""
    install(session, *pins(SETTINGS.torch, SETTINGS.transformers), *SETTINGS.install, *TEST_REQUIREMENTS, root=ROOT)
    scorer = os.environ.get("TRAINSPEC_SCORER") or tinylm_scorer(session, SETTINGS.transformers)
    session.run("pytest", *(session.posargs or ["tests"]), env={"HF_HUB_OFFLINE": "1", "TRAINSPEC_SCORER": scorer})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and mypy over the harness, in a venv without torch."""
    install(session, *LINT_REQUIREMENTS, root=ROOT)
    session.run("ruff", "check", "harness", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "harness")
    session.run("mypy", "harness")


@nox.session
@nox.parametrize("benchmark", ["scheduling", "packing", "simulated", "memory"])
def bench(session: nox.Session, benchmark: str) -> None:
    """The benchmarks, in a venv without torch (not part of CI's verdict); arguments after -- go to each,
    so give them to one alone: nox -s "bench(benchmark='simulated')" -- --repeat 3."""
    install(session, root=ROOT)
    session.run("python", f"benchmarks/bench_{benchmark}.py", *session.posargs)
