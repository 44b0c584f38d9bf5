"""`python -m harness init`: the files that put trainspec into an existing repository.

It writes a starter noxfile.py, a specs/ folder with one commented spec for a generic
training command (and the JSON Schema that YAML-aware editors complete it from), and the
[tool.trainspec] section of pyproject.toml. It never overwrites a file without `force`:
an existing noxfile gets the lines to add printed instead, and an existing pyproject.toml
gets the section appended only when it has none.
"""

from __future__ import annotations

import importlib.metadata
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from harness.project.schema import json_schema
from harness.project.settings import load_settings
from harness.spec.typed_yaml import SpecError

SCHEMA_NAME = "trainspec.schema.json"

SESSION_LINES = """\
# smoke, standard, full (and matrix, tests) from [tool.trainspec] in pyproject.toml; each
# reuses its venv and skips installing when the pins and settings did not change.
define_sessions()
"""

NOXFILE_LINES = f"from harness.project.nox_sessions import define_sessions\n\n{SESSION_LINES}"

NOXFILE = f'''\
"""Spec-driven training tests: `nox -s smoke` on every change, `nox -s full` nightly."""

import sys

import nox  # noqa: F401  (nox reads the sessions registered below)

try:
    from harness.project.nox_sessions import define_sessions
except ModuleNotFoundError as missing:
    if missing.name != "harness":
        raise
    print("noxfile.py: the environment nox runs in lacks trainspec (No module named 'harness'): "
          "install it beside nox from a trainspec checkout or its git URL (it is not on PyPI): "
          "`pipx inject nox PATH/TO/trainspec` if pipx installed nox, else "
          "`python -m pip install PATH/TO/trainspec` or `python -m pip install 'trainspec @ git+URL'`",
          file=sys.stderr)
    raise SystemExit(2) from None

{SESSION_LINES}'''

# The libraries a spec's training usually imports: `init` pins the versions installed where
# it runs, and a session whose venv lacks one the project imports stops before any spec runs.
LIBRARIES = ("torch", "transformers")
# The CPU build of torch does not depend on numpy, yet warns "Failed to initialize NumPy"
# in every run without it.
DEFAULT_INSTALL = ["numpy"]


def installed_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Versions of `names` in this environment, read from package metadata (nothing is imported).

    A local label (`2.5.1+cu121`) is dropped: `torch==2.5.1` matches that build where the
    machine provides it and stays installable from any index.
    """
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name).split("+", 1)[0]
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def pins(torch: str | None, transformers: str | None) -> list[str]:
    """The requirements a session installs for the pinned libraries, leaving out what is not pinned."""
    return [f"{name}=={version}" for name, version in (("torch", torch), ("transformers", transformers)) if version]


def pyproject_section(versions: dict[str, str]) -> str:
    """[tool.trainspec] pinning `versions`; a library not found stays a commented-out line."""
    lines = [
        "[tool.trainspec]",
        "# Every key is listed in trainspec's docs/adoption.md; the command line overrides them.",
        'specs = ["specs"]',
        "# The nox sessions install these pins (the versions found where `harness init` ran), then",
        "# `install`, then trainspec. Leave a pin out when an `install` entry brings the library.",
    ]
    lines += [
        f'{name} = "{versions[name]}"' if name in versions else f'# {name} = "VERSION"  (not installed where init ran)'
        for name in LIBRARIES
    ]
    lines += [
        '# numpy: the CPU build of torch warns "Failed to initialize NumPy" without it. Add your',
        '# project itself ("-e .") when specs import it.',
        f"install = {json.dumps(DEFAULT_INSTALL)}",
        '# matrix = [{ torch = "2.13.0", transformers = "4.57.6" }, { torch = "2.13.0", transformers = "5.23.0" }]',
    ]
    return "\n".join(lines) + "\n"


EXAMPLE_SPEC = f"""\
# yaml-language-server: $schema={SCHEMA_NAME}
# One scenario: run this command, then hold its run to the checks below.
# Every field: python -m harness schema --markdown (or docs/spec-reference.md).
id: train_smoke
tier: smoke                  # smoke: every change; standard: before merge; full: nightly
# Runs from the repository root. {{python}} is the session's interpreter and {{output_dir}} a
# fresh folder for this run's outputs: write logs and checkpoints there, never into the repo.
command: ["{{python}}", "train.py", "--output-dir", "{{output_dir}}"]
args:                        # appended as --max-steps 50; keep smoke runs to seconds
  max_steps: 50
gpus: 1                      # devices the run needs (0: CPU only)
cpu_ok: true                 # also valid on CPU, so machines without a GPU run it
timeout: 300                 # seconds; past it the whole process group is killed
stderr:
  forbidden_patterns: ["Traceback (most recent call last)"]
# The training log: trainer_logs.json, trainer_state.json or *.jsonl in the output dir.
min_steps_logged: 5
loss:
  final_max: 4.0             # leave headroom: a bound a healthy run misses is a flaky spec
  must_decrease: true
# expected_files: [checkpoint/config.json]
"""


@dataclass
class Scaffold:
    """What `init` did, file by file, and what it could only print."""

    wrote: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)


def _write(path: Path, text: str, force: bool, done: Scaffold, root: Path) -> None:
    name = str(path.relative_to(root))
    if path.exists() and not force:
        done.kept.append(f"{name} (it exists; --force replaces it)")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    done.wrote.append(name)


def _pyproject(root: Path, section: str, force: bool, done: Scaffold) -> None:
    path = root / "pyproject.toml"
    if not path.exists():
        _write(path, section, force, done, root)
        return
    text = path.read_text(encoding="utf-8")
    try:
        has_section = "trainspec" in tomllib.loads(text).get("tool", {})
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: invalid TOML, not touching it: {error}") from None
    if has_section:
        done.kept.append("pyproject.toml (it has a [tool.trainspec] section already)")
        return
    path.write_text(text.rstrip("\n") + "\n\n" + section, encoding="utf-8")
    done.wrote.append("pyproject.toml [tool.trainspec] (appended)")


def init(root: Path, force: bool = False) -> Scaffold:
    """Write the starter files into `root`; existing files are kept unless `force`."""
    root = root.resolve()
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    done = Scaffold()
    noxfile = root / "noxfile.py"
    if noxfile.exists() and not force:
        done.kept.append("noxfile.py (it exists; --force replaces it)")
        if "define_sessions" not in noxfile.read_text(encoding="utf-8"):
            done.advice.append(
                "add these lines to noxfile.py:\n" + "".join(f"    {line}\n" for line in NOXFILE_LINES.splitlines())
            )
    else:
        _write(noxfile, NOXFILE, force, done, root)
    _write(root / "specs" / "train_smoke.yaml", EXAMPLE_SPEC, force, done, root)
    _write(root / "specs" / SCHEMA_NAME, json.dumps(json_schema(), indent=2) + "\n", force, done, root)
    versions = installed_versions()
    _pyproject(root, pyproject_section(versions), force, done)
    done.advice.extend(_what_sessions_install(root, versions))
    return done


def _what_sessions_install(root: Path, versions: dict[str, str]) -> list[str]:
    """One line per library the sessions will not install, then what they will install, as the settings now say."""
    try:
        settings = load_settings(root)
    except SpecError:
        return []  # a section of the user's own that does not load: `harness validate` names the problem
    unpinned = [name for name in LIBRARIES if getattr(settings, name) is None and name not in versions]
    lines = []
    if unpinned:
        keys = " and ".join(f'{name} = "VERSION"' for name in unpinned)
        lines.append(
            f"{' and '.join(unpinned)} not found here nor pinned: if your training imports "
            f"{'it' if len(unpinned) == 1 else 'them'}, set {keys} in [tool.trainspec] of pyproject.toml\n"
        )
    requirements = [*pins(settings.torch, settings.transformers), *settings.install, "trainspec"]
    lines.append(f"the nox sessions will install: {' '.join(requirements)}\n")
    return lines
