"""nox sessions declared from `[tool.trainspec]`, so a project's noxfile.py is three lines:

    import nox
    from harness.project.nox_sessions import define_sessions
    define_sessions()

It defines `smoke`, `standard` and `full` (each a tier through `python -m harness run`, with
the session's posargs passed on), `matrix(torch=..., transformers=...)` for each pair in
`matrix` (tagged `matrix`), and `tests` when `tests` is set. Sessions that install the same
pins, `install` list and harness share one venv, reused (unless nox is told
`--no-reuse-existing-virtualenvs`) and not installed into again when nothing it depends on
changed. This module runs in nox's own environment: it needs nox, not
pytest or PyYAML.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import nox
from filelock import FileLock
from nox.virtualenv import ProcessEnv, VirtualEnv

from harness.history.location import driver_requirements
from harness.project.import_check import importers
from harness.project.scaffold import LIBRARIES, installed_versions, pins
from harness.project.settings import Settings, load_settings

# A hook that returns extra `harness run` options for a tier session, e.g. a locally built
# `--scorer PATH` for the inference specs: (session, transformers pin, tier) -> options.
RunOptions = Callable[[nox.Session, str | None, str], list[str]]
TIER_DOCS = {
    "smoke": "The fastest specs: on every change.",
    "standard": "Every single-device spec (integration and not slow): before merge.",
    "full": "Everything, multi-device and inference included: nightly. Devices after --.",
}


def harness_requirement() -> list[str]:
    """How a session venv installs this harness: the source tree it runs from, else from where it was installed
    (the git URL and commit, or the folder, pip recorded in direct_url.json); trainspec is not on PyPI."""
    source = Path(__file__).resolve().parents[2]
    pyproject = source / "pyproject.toml"
    if pyproject.is_file() and 'name = "trainspec"' in pyproject.read_text(encoding="utf-8"):
        return ["-e", str(source)]
    return installed_from(importlib.metadata.distribution("trainspec").read_text("direct_url.json"))


def installed_from(direct_url: str | None) -> list[str]:
    """The requirement that installs trainspec again from where pip got it (PEP 610's direct_url.json)."""
    try:
        origin = json.loads(direct_url or "")
    except ValueError:
        origin = None
    if not isinstance(origin, dict) or not isinstance(origin.get("url"), str):
        return [f"trainspec=={importlib.metadata.version('trainspec')}"]  # a wheel from an index of your own
    url, vcs = origin["url"], origin.get("vcs_info")
    if isinstance(vcs, dict) and vcs.get("vcs") == "git":
        return [f"trainspec @ git+{url}@{vcs.get('commit_id') or vcs.get('requested_revision') or 'HEAD'}"]
    if url.startswith("file://") and (origin.get("dir_info") or {}).get("editable"):
        return ["-e", url.removeprefix("file://")]
    return [f"trainspec @ {url}"]


def uv_environment() -> dict[str, str]:
    """uv ignores pip's configuration: hand it pip's find-links, or it resolves a CUDA torch."""
    links = os.environ.get("PIP_FIND_LINKS")
    return {"UV_FIND_LINKS": links} if links and "UV_FIND_LINKS" not in os.environ else {}


def install(session: nox.Session, *requirements: str, root: Path, shared: bool = False) -> None:
    """Install requirements plus the harness, unless this venv already has exactly these.

    `shared`: the session runs in a venv keyed by what it installs, beside nox's own, so
    sessions with the same requirements (the tiers, a matrix cell with the tiers' pins) build
    and fill one venv (about 1 GB with torch) instead of one each.
    """
    harness = harness_requirement()
    everything = [*requirements, *harness]
    venv = shared_venv(session, everything) if shared else session.virtualenv
    # A changed pyproject (the project's, or the harness source's) may change what to install.
    watched = [root / "pyproject.toml", *([Path(harness[1]) / "pyproject.toml"] if harness[0] == "-e" else [])]
    stamp_input = json.dumps([everything, *(p.read_text() for p in watched if p.is_file())])
    digest = hashlib.sha256(stamp_input.encode()).hexdigest()
    # Sessions run in parallel (nox --parallel) must not build or fill one venv at once.
    with FileLock(f"{venv.location}.lock"):
        if venv is not session.virtualenv:
            venv.create()
            adopt_venv(session, venv)
            remove_superseded(session, Path(venv.location))
        stamp = Path(session.virtualenv.location) / ".trainspec-installed"
        if stamp.exists() and stamp.read_text() == digest:
            session.log("requirements unchanged since the last install; skipping it")
            return
        session.install(*everything, env=uv_environment())
        stamp.write_text(digest)


def shared_venv(session: nox.Session, requirements: list[str]) -> ProcessEnv:
    """The venv for `requirements` beside the session's own, made like it (same backend,
    interpreter, parameters and reuse); the session's own when it is not a plain venv
    (conda) or when this nox cannot point a session at another one (see `adopt_venv`)."""
    own = session.virtualenv
    if not isinstance(own, VirtualEnv) or not hasattr(getattr(session, "_runner", None), "venv"):
        return own
    key = json.dumps([requirements, own.venv_backend, own.interpreter, own.venv_params])
    location = Path(own.location).parent / f"trainspec-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    return VirtualEnv(
        str(location),
        own.interpreter,
        download_python=own.download_python,
        reuse_existing=own.reuse_existing,
        venv_backend=own.venv_backend,
        venv_params=own.venv_params,
    )


def remove_superseded(session: nox.Session, location: Path) -> None:
    """Remove the shared venv this session used before when its requirements (a pin) changed and no other
    session still uses it: each is about a gigabyte with torch. `trainspec-venvs.json` beside them
    remembers which session uses which."""
    registry = location.parent / "trainspec-venvs.json"
    with FileLock(f"{registry}.lock"):
        try:
            used = json.loads(registry.read_text())
        except (OSError, ValueError):
            used = {}
        used = used if isinstance(used, dict) else {}
        before = used.get(session.name)
        used[session.name] = str(location)
        registry.write_text(json.dumps(used, indent=1, sort_keys=True))
    old = Path(before) if isinstance(before, str) else None
    if old is None or old == location or str(old) in used.values() or not old.name.startswith("trainspec-"):
        return
    with FileLock(f"{old}.lock"):
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
            session.log(f"removed {old}: the venv this session used before its requirements changed")


def adopt_venv(session: nox.Session, venv: ProcessEnv) -> None:
    """Make every later `session.install` and `session.run` use `venv`.

    nox has no public way to point a session at another venv (a `venv_location` option is
    proposed upstream, wntrblm/nox#785); this sets the one attribute its commands read, which
    `shared_venv` checks for first: a nox without it keeps each session's own venv.
    """
    for name, value in session.virtualenv.env.items():
        venv.env.setdefault(name, value)  # NOX_CURRENT_SESSION and the like; the venv's own paths stay
    session._runner.venv = venv
    session.log(f"using {venv.location}, shared by the sessions that install the same requirements")


def require_libraries(session: nox.Session, root: Path, enabled: bool = True) -> None:
    """Stop the session once, before any spec runs, when its venv lacks torch or transformers although
    the project imports it at module level: otherwise every spec fails with the same `No module named
    'torch'`, each reported as its own failed checks. An import that only a function or a
    `try/except ImportError` holds earns one line (specs that reach it fail with their own root
    error). `import_check = false` in [tool.trainspec] turns the check off."""
    if not enabled:
        return
    probe = (
        "import importlib.util, sys; print(' '.join(n for n in sys.argv[1:] if importlib.util.find_spec(n) is None))"
    )
    output = session.run("python", "-c", probe, *LIBRARIES, silent=True, log=False)
    if not isinstance(output, str):
        return  # --install-only runs no commands
    missing = output.split()
    used = importers(root, missing) if missing else {}
    if not used:
        return
    here = installed_versions(tuple(used))
    keys = " and ".join(f'{name} = "{here.get(name, "VERSION")}"' for name in used)
    files = ", ".join(importer.describe(name) for name, importer in used.items())
    remedy = f"set {keys} in [tool.trainspec] of pyproject.toml, or list a requirement that brings it in `install`"
    if any(importer.at_module_level for importer in used.values()):
        session.error(
            f"this session's venv has no {' and no '.join(used)} but {files}: {remedy} (import_check = false skips"
            " this check)"
        )
    session.log(f"this session's venv has no {' and no '.join(used)}; {files}: specs that reach it fail; {remedy}")


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
    """`python -m harness run --tier T`, then the session's posargs (later options win)."""
    session.run(
        "python", "-m", "harness", "run", "--tier", tier, *options, *session.posargs, env={"HF_HUB_OFFLINE": "1"}
    )


def define_sessions(
    root: Path | str | None = None, *, run_options: RunOptions | None = None, settings: Settings | None = None
) -> Settings:
    """Register the tier, matrix and tests sessions for the project at `root` (default: the cwd,
    which nox sets to the noxfile's folder). Returns the settings read, for a noxfile's own sessions."""
    root = Path(root or os.getcwd()).resolve()
    settings = settings or load_settings(root)
    for tier in TIER_DOCS:
        _tier_session(tier, settings, root, run_options)
    if settings.matrix:
        _matrix_session(settings, root, run_options)
    if settings.tests is not None:
        _tests_session(settings, root)
    return settings


def _tier_session(tier: str, settings: Settings, root: Path, run_options: RunOptions | None) -> None:
    def session_function(session: nox.Session) -> None:
        install(
            session,
            *pins(settings.torch, settings.transformers),
            *settings.install,
            *driver_requirements(settings.history),
            root=root,
            shared=True,
        )
        require_libraries(session, root, settings.import_check)
        extra = run_options(session, settings.transformers, chosen_tier(session, tier)) if run_options else []
        run_tier(session, tier, *extra)

    session_function.__doc__ = TIER_DOCS[tier]
    nox.session(name=tier, reuse_venv=True)(session_function)


def _matrix_session(settings: Settings, root: Path, run_options: RunOptions | None) -> None:
    def session_function(session: nox.Session, torch: str | None, transformers: str | None) -> None:
        install(
            session,
            *pins(torch, transformers),
            *settings.install,
            *driver_requirements(settings.history),
            root=root,
            shared=True,
        )
        require_libraries(session, root, settings.import_check)
        run_dir = Path(session.cache_dir).resolve() / "matrix" / f"torch-{torch}_transformers-{transformers}"
        tier = chosen_tier(session, settings.matrix_tier)
        extra = run_options(session, transformers, tier) if run_options else []
        try:
            run_tier(session, settings.matrix_tier, "--run-dir", str(run_dir), *extra)
        finally:
            session.log(f"compare the combinations: python -m harness report {run_dir.parent}/*")

    session_function.__doc__ = (
        f"The {settings.matrix_tier} tier (or `-- --tier T`) on one pinned torch x transformers pair."
    )
    pairs = [(c.torch, c.transformers) for c in settings.matrix]
    nox.session(name="matrix", tags=["matrix"], reuse_venv=True)(
        nox.parametrize(("torch", "transformers"), pairs)(session_function)
    )


def _tests_session(settings: Settings, root: Path) -> None:
    def session_function(session: nox.Session) -> None:
        install(
            session,
            *pins(settings.torch, settings.transformers),
            *settings.install,
            *settings.test_install,
            "pytest",
            root=root,
            shared=True,
        )
        require_libraries(session, root, settings.import_check)
        session.run("pytest", *(session.posargs or settings.tests or []), env={"HF_HUB_OFFLINE": "1"})

    session_function.__doc__ = "The project's own tests; arguments after -- go to pytest."
    nox.session(name="tests", reuse_venv=True)(session_function)
