"""Small rules the spec's blocks share: paths that stay inside their base, stderr patterns,
ids, args values, and splitting a command string."""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterable
from typing import Any

from harness.spec.globs import glob_problem

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# An id names folders and files (`specs/<id>/`, `<stage>.stderr.log`): well inside the 255 bytes a file name may take.
ID_LIMIT = 128
NUL = "\x00"
NUL_PROBLEM = "holds a NUL character, which no command line, environment or path can carry"


def relative_inside(value: str, what: str) -> str | None:
    """Why `value` is not a relative path that stays inside its base, or None when it is."""
    if not value:
        return f"{what} must not be empty"
    if NUL in value:
        return f"{value!r} {NUL_PROBLEM}"
    if value.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", value):
        return f"must be relative to {what}, found the absolute path {value!r}"
    if posixpath.normpath(value.replace("\\", "/")).split("/")[0] == "..":
        return f"must stay inside {what}, found {value!r} which escapes it"
    return None


def regex_problem(pattern: str, shown: str | None = None) -> str | None:
    """Why `pattern` is not a regular expression, or None."""
    try:
        re.compile(pattern)
    except re.error as error:
        return f"{shown or repr(pattern)} is not a valid regular expression: {error}"
    return None


def path_problem(value: str, what: str) -> str | None:
    """Why a glob of files below `what` is not one: it leaves its base, or pathlib cannot search with it."""
    return relative_inside(value, what) or glob_problem(value)


def process_problems(
    argv: Iterable[str], env: dict[str, Any], argv_field: str = "command"
) -> Iterable[tuple[str, str]]:
    """What no process can be started with: a NUL in an argument or the environment, or a variable name with `=`."""
    for index, part in enumerate(argv):
        if NUL in part:
            yield argv_field, f"item {index} ({part!r}) {NUL_PROBLEM}"
    for name, value in env.items():
        if not name or "=" in name or NUL in name:
            yield "env", f"{name!r} is no variable name: it must be non-empty, without '=' or NUL"
        elif NUL in str(value):
            yield "env", f"{name}: {NUL_PROBLEM}"


def placeholder_problem(field: str, known: Iterable[str]) -> str | None:
    """Why a `{...}` in a command, arg or env value is not a placeholder the harness fills, or None.

    Only the bare name: a format spec (`{gpus:>200000000}`) would let a spec make the harness build
    a string of any size, and a conversion or an index (`{gpus!r}`, `{gpus[0]}`) changes no value it offers.
    """
    known = list(known)
    if field in known:
        return None
    name = re.split(r"[!:.\[]", field, maxsplit=1)[0]
    if name in known:
        return f"placeholder {{{field}}} has a format spec, conversion or index; write {{{name}}} alone"
    return f"unknown placeholder {{{field}}}; known: {', '.join('{' + p + '}' for p in known)}"


def patterns_problem(patterns: Iterable[str]) -> str | None:
    for pattern in patterns:
        if pattern.startswith("re:"):
            if why := regex_problem(pattern[3:], repr(pattern)):
                return why
        elif not pattern:
            return "an empty pattern would match everything"
    return None


def matches(pattern: str, text: str) -> bool:
    """A stderr pattern: a plain substring, or a regular expression written `re:...`."""
    return re.search(pattern[3:], text) is not None if pattern.startswith("re:") else pattern in text


def split_command(command: str) -> list[str]:
    """A command string split shell-style; unbalanced quotes leave it whole (and it fails to start, clearly)."""
    try:
        return shlex.split(command)
    except ValueError:
        return [command]


def run_problems(
    run_id: str, expected_files: list[str] | None, args: dict[str, Any], style: str | None = None
) -> Iterable[tuple[str, str]]:
    """What a spec and a stage check alike: the id, the expected files, the args."""
    if not _ID.match(run_id):
        yield "id", f"must start with a letter or digit and hold only letters, digits, '_', '.', '-'; found {run_id!r}"
    elif len(run_id) > ID_LIMIT:
        yield "id", f"must be at most {ID_LIMIT} characters (it names the run's folder and files), found {len(run_id)}"
    for pattern in expected_files or ():
        if why := path_problem(pattern, "the output dir"):
            yield "expected_files", why
    for key, value in (flat_args(args) if style == "hydra" else args).items():
        if NUL in key or NUL in str(value):
            yield "args", f"{key!r}: {NUL_PROBLEM}"
            continue
        if not arg_value_ok(value):
            found = (
                "a mapping"
                if isinstance(value, dict)
                else "a nested list"
                if isinstance(value, list)
                else type(value).__name__
            )
            nested = " (a mapping only with args_style: hydra, as a.b=value)" if isinstance(value, dict) else ""
            yield "args", f"{key}: expected a string, number, boolean, null or a list of those, found {found}{nested}"


def arg_value_ok(value: Any) -> bool:
    if isinstance(value, list):
        return all(arg_value_ok(v) and not isinstance(v, list) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def flat_args(args: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings flattened to dotted keys (`{optim: {lr: 0.1}}` -> `{optim.lr: 0.1}`), as Hydra writes them."""
    flat: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, dict):
            flat.update(flat_args(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Memory sizes as a spec (`gpu_memory`) and the command line (`--fake-gpu-memory`) write them, in MiB.
UNITS = {"mib": 1.0, "gib": 1024.0, "tib": 1024.0**2, "mb": 1e6 / 2**20, "gb": 1e9 / 2**20, "tb": 1e12 / 2**20}


def parse_memory(text: str) -> int:
    """A memory size (`6GiB`, `512 MiB`, `24GB`, `1.5GiB`) in whole MiB; ValueError naming the text otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*", str(text))
    if not match or match.group(2).lower() not in UNITS:
        raise ValueError(
            f"{text!r} is not a memory size: write a number and a unit (MiB, GiB, MB, GB, TiB or TB), e.g. 6GiB"
        )
    mib = int(float(match.group(1)) * UNITS[match.group(2).lower()])
    if mib < 1:
        raise ValueError(f"{text!r} is not a memory size: it must be at least 1MiB")
    return mib


def memory_problem(value: str) -> str | None:
    """Why a `gpu_memory` value is not one (a size, or `auto`), or None."""
    if value == "auto":
        return None
    try:
        parse_memory(value)
    except ValueError as error:
        return f"{error}, or auto"
    return None
