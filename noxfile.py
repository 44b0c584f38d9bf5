"""Tier sessions (smoke, standard, full), the harness's own tests, and the benchmark.

Every session builds its own venv with the pins below and installs the harness from this
working tree. Venvs are reused, and installing is skipped when nothing it depends on
changed, so `nox -s smoke` is fast after the first time; `nox -R` skips installing outright.

    nox -s smoke                      # every change
    nox -s standard                   # before merge
    nox -s full -- --gpus 2           # nightly; arguments after -- go to `python -m harness run`
    nox -s tests                      # the harness's own test suite (CPU only)
    nox -t matrix -- --tier smoke     # a tier on every torch x transformers pair in MATRIX
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nox

# The one place that pins the libraries a tier runs on. torch 2.13.0 has a local CPU wheel on
# CI; on GPU boxes, run nox with `--default-venv-backend uv` and UV_TORCH_BACKEND=auto.
TORCH = "2.13.0"
TRANSFORMERS = "4.57.6"
# The combinations `nox -t matrix` repeats a tier over: (torch, transformers).
MATRIX = [(TORCH, TRANSFORMERS), (TORCH, "5.23.0")]
TRAINING_REQUIREMENTS = ("numpy", "accelerate>=1.0")
TEST_REQUIREMENTS = ("hypothesis>=6", "nox>=2024.3")

ROOT = Path(__file__).parent
nox.options.sessions = ["smoke", "tests"]
nox.options.reuse_venv = "yes"


def _uv_environment() -> dict[str, str]:
    """uv ignores pip's configuration: hand it pip's find-links, or it resolves a CUDA torch."""
    links = os.environ.get("PIP_FIND_LINKS")
    return {"UV_FIND_LINKS": links} if links and "UV_FIND_LINKS" not in os.environ else {}


def install(session: nox.Session, *requirements: str) -> None:
    """Install requirements plus the harness, unless this venv already has exactly these."""
    stamp_input = json.dumps([requirements, (ROOT / "pyproject.toml").read_text()])
    digest = hashlib.sha256(stamp_input.encode()).hexdigest()
    stamp = Path(session.virtualenv.location) / ".trainspec-installed"
    if stamp.exists() and stamp.read_text() == digest:
        session.log("requirements unchanged since the last install; skipping it")
        return
    session.install(*requirements, "-e", str(ROOT), env=_uv_environment())
    stamp.write_text(digest)


def install_training(session: nox.Session, *extra: str, torch: str = TORCH, transformers: str = TRANSFORMERS) -> None:
    install(session, f"torch=={torch}", f"transformers=={transformers}", *TRAINING_REQUIREMENTS, *extra)


def tinylm_scorer(session: nox.Session, transformers: str = TRANSFORMERS) -> str:
    """The example's reference scorer (a tinylm trained longer), built once per pin.

    Nothing is downloaded at run time, so the perplexity gate scores with a model built here,
    kept in nox's cache folder and keyed by the transformers pin (tokenizer files written by
    transformers 5 do not load in 4.x).
    """
    path = Path(session.cache_dir).resolve() / f"tinylm-scorer-transformers-{transformers}"
    session.run("python", "examples/tinylm/build_scorer.py", "--output", str(path), env={"HF_HUB_OFFLINE": "1"}, silent=True)
    return str(path)


def chosen_tier(session: nox.Session, default: str) -> str:
    """The tier a session runs: the last `--tier T` in its posargs (as argparse reads it), else `default`."""
    tier = default
    for index, arg in enumerate(session.posargs):
        if arg == "--tier" and index + 1 < len(session.posargs):
            tier = session.posargs[index + 1]
        elif arg.startswith("--tier="):
            tier = arg.split("=", 1)[1]
    return tier


def run_tier(session: nox.Session, tier: str, *options: str) -> None:
    session.run("python", "-m", "harness", "run", "--tier", tier, *options, *session.posargs, env={"HF_HUB_OFFLINE": "1"})


@nox.session
def smoke(session: nox.Session) -> None:
    """The fastest spec(s): on every change."""
    install_training(session)
    run_tier(session, "smoke")


@nox.session
def standard(session: nox.Session) -> None:
    """Every single-device training spec (integration and not slow): before merge."""
    install_training(session)
    run_tier(session, "standard")


@nox.session
def full(session: nox.Session) -> None:
    """Everything, multi-device and inference included: nightly. Pass devices after --.

    Inference specs are scored by the example's own reference model unless the caller names
    one (`-- --scorer PATH` wins, being later on the command line; so does TRAINSPEC_SCORER).
    """
    install_training(session)
    scorer = () if os.environ.get("TRAINSPEC_SCORER") else ("--scorer", tinylm_scorer(session))
    run_tier(session, "full", *scorer)


@nox.session(tags=["matrix"])
@nox.parametrize(("torch", "transformers"), MATRIX)
def matrix(session: nox.Session, torch: str, transformers: str) -> None:
    """The standard tier (or `-- --tier T`) on one pinned torch x transformers pair.

    Each pair keeps its latest run under nox's cache folder, so
    `python -m harness report .nox/.cache/matrix/*` compares them (the session prints it).
    """
    install_training(session, torch=torch, transformers=transformers)
    run_dir = Path(session.cache_dir).resolve() / "matrix" / f"torch-{torch}_transformers-{transformers}"
    # Only the full tier has inference specs; the scorer takes a while to build.
    needs_scorer = chosen_tier(session, "standard") == "full" and not os.environ.get("TRAINSPEC_SCORER")
    scorer = ("--scorer", tinylm_scorer(session, transformers)) if needs_scorer else ()
    try:
        run_tier(session, "standard", "--run-dir", str(run_dir), *scorer)
    finally:
        session.log(f"compare the combinations: python -m harness report {Path(session.cache_dir) / 'matrix'}/*")


@nox.session
def tests(session: nox.Session) -> None:
    """The harness's own tests (CPU only); arguments after -- go to pytest."""
    install_training(session, *TEST_REQUIREMENTS)
    scorer = os.environ.get("TRAINSPEC_SCORER") or tinylm_scorer(session)
    session.run("pytest", *(session.posargs or ["tests"]), env={"HF_HUB_OFFLINE": "1", "TRAINSPEC_SCORER": scorer})


@nox.session
def bench(session: nox.Session) -> None:
    """Scheduling and overhead benchmark in a venv without torch (not part of CI's verdict)."""
    install(session)
    session.run("python", "benchmarks/bench_scheduling.py", *session.posargs)
