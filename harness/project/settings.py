"""`[tool.trainspec]` in a project's pyproject.toml: the defaults of its runs and nox sessions.

Read with the converter that reads specs, so an unknown key names the closest known one
and a wrong type says what is allowed. Options given on the command line win over these.
Importable without PyYAML or pytest: the nox helpers read it in nox's own environment.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, make_dataclass
from pathlib import Path
from typing import Any, Literal

from harness.options import RUN_OPTIONS, Option
from harness.spec.typed_yaml import Problem, SpecError, build
from harness.spec.typed_yaml import option as field_option

SECTION = "tool.trainspec"


@dataclass(frozen=True)
class Combination:
    """One torch x transformers pair of the version matrix."""

    torch: str | None = field_option(
        None, doc="torch version installed as `torch==V` (none: not installed by trainspec)"
    )
    transformers: str | None = field_option(
        None, doc="transformers version installed as `transformers==V` (none: not installed by trainspec)"
    )


def _run_option_field(option: Option) -> tuple[str, Any, Any]:
    default: Any = False if option.action == "store_true" else None
    return (
        option.name,
        option.setting_type,
        field_option(default, doc=option.setting_help or option.help, minimum=option.minimum),
    )


# The run options that are also settings come from the one option table.
_RunSettings = make_dataclass("_RunSettings", [_run_option_field(o) for o in RUN_OPTIONS if o.setting], frozen=True)


@dataclass(frozen=True)
class Settings(_RunSettings):  # type: ignore[misc, valid-type]  # its base is generated from harness.options
    """What a project sets once instead of on every command line."""

    specs: list[str] = field_option(
        factory=lambda: ["specs"], doc="spec files or folders, relative to the project root"
    )
    torch: str | None = field_option(
        None, doc="torch version the nox sessions install (none: trainspec installs no torch; your `install` list may)"
    )
    transformers: str | None = field_option(
        None, doc="transformers version the nox sessions install (none: not installed by trainspec)"
    )
    install: list[str] = field_option(
        factory=list, doc='more pip requirements for every session venv, e.g. ["-e ."] for the project itself'
    )
    matrix: list[Combination] = field_option(
        factory=list, doc="torch x transformers pairs `nox -t matrix` repeats a tier over"
    )
    matrix_tier: Literal["smoke", "standard", "full"] = field_option(
        "standard", doc="the tier the matrix sessions run without `-- --tier T`"
    )
    tests: list[str] | None = field_option(
        None, doc="pytest arguments of a `tests` nox session for the project's own tests (none: no such session)"
    )
    test_install: list[str] = field_option(factory=list, doc="more pip requirements for the `tests` session only")
    import_check: bool = field_option(
        True,
        doc="stop a session, before any spec, whose venv lacks torch or transformers that a project file imports at"
        " module level (an import inside a function or under try/except ImportError only prints a line); false: no"
        " check",
    )

    def check(self) -> Iterable[tuple[str, str]]:
        groups: dict[str, list[str]] = {}
        for option in RUN_OPTIONS:
            if option.setting and option.exclusive and getattr(self, option.name) is not None:
                groups.setdefault(option.exclusive, []).append(option.name)
        for names in groups.values():
            if len(names) > 1:
                yield names[-1], f"give {' or '.join(names)}, not both"
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
