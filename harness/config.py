"""`[tool.trainspec]` in a project's pyproject.toml: the defaults of its runs and nox sessions.

Read with the converter that reads specs, so an unknown key names the closest known one
and a wrong type says what is allowed. Options given on the command line win over these.
Importable without PyYAML or pytest: the nox helpers read it in nox's own environment.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

from .structure import Problem, SpecError, build, option

SECTION = "tool.trainspec"


@dataclass(frozen=True)
class Combination:
    """One torch x transformers pair of the version matrix."""

    torch: str | None = option(None, doc="torch version installed as `torch==V` (none: not installed by trainspec)")
    transformers: str | None = option(None, doc="transformers version installed as `transformers==V` (none: not installed by trainspec)")


@dataclass(frozen=True)
class Settings:
    """What a project sets once instead of on every command line."""

    specs: list[str] = option(factory=lambda: ["specs"], doc="spec files or folders, relative to the project root")
    tier: Literal["smoke", "standard", "full"] | None = option(None, doc="tier `python -m harness run` selects without --tier (default: every spec)")
    torch: str | None = option(None, doc="torch version the nox sessions install (none: trainspec installs no torch; your `install` list may)")
    transformers: str | None = option(None, doc="transformers version the nox sessions install (none: not installed by trainspec)")
    install: list[str] = option(factory=list, doc="more pip requirements for every session venv, e.g. [\"-e .\"] for the project itself")
    matrix: list[Combination] = option(factory=list, doc="torch x transformers pairs `nox -t matrix` repeats a tier over")
    matrix_tier: Literal["smoke", "standard", "full"] = option("standard", doc="the tier the matrix sessions run without `-- --tier T`")
    tests: list[str] | None = option(None, doc="pytest arguments of a `tests` nox session for the project's own tests (none: no such session)")
    test_install: list[str] = option(factory=list, doc="more pip requirements for the `tests` session only")
    run_dir: str | None = option(None, doc="where each run's outputs go, relative to the project root (default: a fresh folder under the trainspec cache)")
    scorer: str | None = option(None, doc="reference model for inference perplexity: a local Hugging Face cache name or a path (default: TRAINSPEC_SCORER, else gpt2)")
    gpus: int | None = option(None, doc="devices runs may use (default: CUDA_VISIBLE_DEVICES, else nvidia-smi -L)", minimum=0)
    fake_gpus: int | None = option(None, doc="simulate this many devices by default (CPU machines; cpu_ok specs only)", minimum=1)

    def check(self) -> Iterable[tuple[str, str]]:
        if self.gpus is not None and self.fake_gpus is not None:
            yield "fake_gpus", "give gpus or fake_gpus, not both"
        if not self.specs:
            yield "specs", "give at least one spec file or folder"


def load_settings(root: Path) -> Settings:
    """The project's settings, or the defaults when it has no pyproject.toml or no section."""
    path = root / "pyproject.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Settings()
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(path, None, f"cannot read the file: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(path, None, f"invalid TOML: {error}") from None
    section = data.get("tool", {}).get("trainspec", {})
    try:
        return build(Settings, section, SECTION, None)
    except Problem as problem:
        raise SpecError(path, problem.field, problem.message) from None
