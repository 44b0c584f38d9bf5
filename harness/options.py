"""Every run option, declared once.

An `Option` becomes a flag of `python -m harness run` (and `plan` where it applies), an option
of the pytest plugin (so `pytest -p harness.plugin` takes the same flags), and, where it is a
`setting`, a key of `[tool.trainspec]` with the same name and help. The CLI forwards what the
user gave to pytest by rendering each option back into flags, so adding an option is one
entry here (or in a backend's `options`), read back by name from the run's option values.

Standard library only: nox's own environment imports the settings built from this table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

TIERS = ("smoke", "standard", "full")


@dataclass(frozen=True)
class Option:
    name: str
    help: str
    type: type = str
    default: Any = None
    choices: tuple[str, ...] | None = None
    action: Literal["store", "store_true", "append"] = "store"
    metavar: str | None = None
    setting: bool = False  # also a [tool.trainspec] key
    setting_help: str | None = None  # the key's help where it differs from the flag's
    minimum: int | None = None
    commands: tuple[str, ...] = ("run",)
    exclusive: str | None = None  # options of one group exclude each other, on the command line and in the settings
    project_path: bool = False  # a setting's value is relative to the project root
    pytest: bool = True  # the plugin takes it; False for what only the CLI acts on (e.g. how many workers to start)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def argparse_kwargs(self) -> dict[str, Any]:
        """What argparse's and pytest's `add_argument`/`addoption` take (pytest's mirror argparse)."""
        kwargs: dict[str, Any] = {"dest": self.name, "help": self.help, "default": self.default}
        if self.action == "store_true":
            return {**kwargs, "action": "store_true", "default": bool(self.default)}
        kwargs.update(action=self.action, metavar=self.metavar)
        if self.type is not str:
            kwargs["type"] = self.type
        if self.choices:
            kwargs["choices"] = self.choices
        return kwargs

    def to_argv(self, value: Any) -> list[str]:
        """The flags that give `value` again (nothing for the default); a value that starts with a dash is joined with
        `=`."""
        if value is None or value == self.default:
            return []
        if self.action == "store_true":
            return [self.flag] if value else []
        values = value if self.action == "append" else [value]
        return [
            part
            for item in values
            for part in ([f"{self.flag}={item}"] if str(item).startswith("-") else [self.flag, str(item)])
        ]

    @property
    def setting_type(self) -> Any:
        if self.action == "store_true":
            return bool
        if self.action == "append":
            return list[str]
        base: Any = Literal[self.choices] if self.choices else self.type
        return base | None


RUN_OPTIONS: tuple[Option, ...] = (
    Option(
        "tier",
        "smoke, standard (integration and not slow) or full (every spec; the default)",
        choices=TIERS,
        commands=("run", "plan"),
        setting=True,
        setting_help="tier `python -m harness run` selects without --tier (default: every spec)",
    ),
    Option(
        "gpus",
        "devices this run may use; it needs that many visible (default: what CUDA_VISIBLE_DEVICES or "
        "ROCR_/HIP_VISIBLE_DEVICES name, else what nvidia-smi or rocm-smi lists)",
        type=int,
        metavar="N",
        commands=("run", "plan"),
        setting=True,
        minimum=0,
        exclusive="devices",
    ),
    Option(
        "fake_gpus",
        "simulate N devices on a machine without CUDA; only cpu_ok specs run",
        type=int,
        metavar="N",
        commands=("run", "plan"),
        setting=True,
        minimum=1,
        exclusive="devices",
        setting_help="simulate this many devices by default (CPU machines; cpu_ok specs only)",
    ),
    Option(
        "fake_gpu_memory",
        "memory of each simulated device, e.g. 24GiB (units MiB, GiB, TiB, MB, GB, TB; default 80GiB); only "
        "with --fake-gpus",
        metavar="SIZE",
        commands=("run", "plan"),
    ),
    Option(
        "gpu_headroom",
        "fraction of each device's memory kept free when specs that declare gpu_memory share it (default 0.1: a tenth)",
        type=float,
        metavar="FRACTION",
        commands=("run", "plan"),
        setting=True,
    ),
    Option(
        "allow_skips",
        "exit 0, not 5, when every selected spec was skipped for lack of devices",
        action="store_true",
        setting=True,
    ),
    Option(
        "run_dir",
        "where outputs, results.json and junit.xml go (default: a fresh folder under the trainspec cache, "
        "outside the repository, printed)",
        metavar="DIR",
        setting=True,
        project_path=True,
        setting_help="where each run's outputs go, relative to the project root (default: a fresh folder under the "
        "trainspec cache)",
    ),
    Option(
        "scorer",
        "reference model for inference perplexity: a local Hugging Face cache name or a path (default: "
        "TRAINSPEC_SCORER, else gpt2); a spec's inference.scorer wins",
        metavar="MODEL",
        setting=True,
    ),
    Option(
        "missing_scorer",
        "when the scorer model is not on this machine: fail the spec (default) or skip its inference stage",
        choices=("fail", "skip"),
    ),
    Option(
        "baseline",
        "compare with a stored results.json or run directory: final loss, perplexity or duration grown past "
        "the spec's tolerances fail or warn",
        metavar="PATH",
    ),
    Option(
        "tolerance",
        "override every spec's baseline tolerance: final_loss[_abs], perplexity[_abs], duration[_abs], "
        "curve[_abs] or curve_fraction, e.g. final_loss=0.1; repeatable",
        action="append",
        metavar="NAME=VALUE",
    ),
    Option(
        "allow_repo_writes",
        "do not fail the run when specs wrote into the repository (compared with git before and after)",
        action="store_true",
    ),
    Option(
        "backend",
        "where runs execute: this machine (local, the default) or a cluster's scheduler",
        default="local",
        metavar="NAME",
    ),
    Option(
        "changed_since",
        "run only the specs whose dependencies (traced imports and reads, watch globs, the spec file, "
        "pyproject.toml, noxfile.py) changed between the git revision REF and the working tree, untracked "
        "files included; a spec never traced here runs",
        metavar="REF",
        commands=("run", "plan"),
    ),
    Option(
        "skip_unchanged",
        "do not run again a spec that passed with the same fingerprint (spec, dependency contents, harness, "
        "Python, torch and transformers versions, devices); it is reported as unchanged",
        action="store_true",
        setting=True,
        setting_help="reuse a pass whose fingerprint still matches, as --skip-unchanged does (--no-skip-unchanged "
        "overrides it)",
    ),
    Option(
        "no_skip_unchanged", "run every selected spec even where the settings say skip_unchanged", action="store_true"
    ),
    Option(
        "unchanged_days",
        "a reused pass older than this many days runs again (default 7)",
        type=int,
        metavar="DAYS",
        minimum=1,
        setting=True,
        setting_help="a pass reused by --skip-unchanged runs again once it is this many days old (default 7), so a "
        "nightly still reruns everything weekly",
    ),
    Option(
        "history",
        "where the run history is kept: a file path or a URL (sqlite:////abs/path, postgresql://user@host/db); "
        "default: history.sqlite under the trainspec cache",
        metavar="PATH_OR_URL",
        commands=("run", "history"),
        setting=True,
        setting_help="the run history: a SQLite file (relative to the project root) or a PostgreSQL URL "
        "(default: history.sqlite under the trainspec cache)",
    ),
    Option("no_history", "do not append this run to the run history", action="store_true"),
    Option(
        "fail_on_drift",
        "fail the run when a spec's metric drifted: a sustained shift over recent commits in the run history",
        action="store_true",
        setting=True,
    ),
    Option(
        "quarantine",
        "run specs the history knows as flaky, but do not let their failure fail the run (a numeric failure still "
        "does); a spec leaves quarantine after a clean streak",
        action="store_true",
        setting=True,
    ),
    Option(
        "workers",
        "parallel pytest-xdist workers (default: one per device, none for a single device; a backend may ask for more)",
        type=int,
        metavar="N",
        minimum=0,
        pytest=False,
    ),
    Option(
        "repo",
        "the repository root that spec cwds are relative to (default: the current directory)",
        metavar="DIR",
        commands=(),
    ),
)


def for_command(options: Iterable[Option], command: str) -> list[Option]:
    return [option for option in options if command in option.commands]


def add_to_parser(parser: Any, options: Iterable[Option]) -> None:
    """Add options to an argparse parser or a pytest option group; exclusive ones in a mutually exclusive group
    (argparse)."""
    groups: dict[str, Any] = {}
    for option in options:
        target = parser
        if option.exclusive and hasattr(parser, "add_mutually_exclusive_group"):
            if option.exclusive not in groups:
                groups[option.exclusive] = parser.add_mutually_exclusive_group()
            target = groups[option.exclusive]
        adder = target.add_argument if hasattr(target, "add_argument") else target.addoption
        adder(option.flag, **option.argparse_kwargs())
