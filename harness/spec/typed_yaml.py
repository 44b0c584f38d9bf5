"""Typed YAML blocks: read a YAML file and turn its mappings into frozen dataclasses.

Every spec block is a dataclass whose fields carry their documentation, aliases and
bounds in `option(...)`. One converter reads them all, so an unknown key, a wrong type or
an out-of-range value gets the same located, one-line message everywhere, and the JSON
Schema and the field reference are generated from the very definitions the loader uses.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Iterator
from dataclasses import MISSING
from pathlib import Path
from typing import Any, Literal, Union


class SpecError(Exception):
    """A bad spec: says which file, which field and, where YAML gives it, which line."""

    def __init__(self, file: str | Path | None, field: str | None, message: str, line: int | None = None):
        self.file = str(file) if file is not None else None
        self.field = field
        self.message = message
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<spec>"
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def located(self, file: str | Path) -> SpecError:
        return SpecError(file, self.field, self.message, self.line)


class Located(dict):
    """A YAML mapping that remembers the line of each key (1-based)."""

    def __init__(self, *args: Any, line: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.line = line
        self.lines: dict[Any, int] = {}


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, again: int):
        self.key, self.first, self.again = key, first, again


@functools.cache
def _loader() -> type:
    """Safe YAML (libyaml's parser where PyYAML has it) with located mappings and duplicate keys refused.

    Built on first use: the nox helpers import this module for pyproject settings in nox's
    own environment, which need not have PyYAML.
    """
    import yaml

    loader: Any = type("TrainspecLoader", (getattr(yaml, "CSafeLoader", yaml.SafeLoader),), {})
    loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    return loader


def _construct_mapping(loader: Any, node: Any, deep: bool = False) -> Located:
    own = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)
    # flatten_mapping puts the pairs a `<<:` merge key brings in first: the mapping's own
    # keys may override those, but not each other.
    inherited = len(node.value) - own
    mapping = Located(line=node.start_mark.line + 1)
    written: set = set()
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise SpecError(None, None, "a mapping key must be a plain value", line) from None
        if key in written:
            raise _DuplicateKey(key, mapping.lines[key], line)
        if index >= inherited:
            written.add(key)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = line
    return mapping


def load_yaml(path: Path) -> Any:
    """Parse one YAML file, turning every YAML problem into a located SpecError."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(path, None, f"cannot read the file: {error}") from None
    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - the loader derives from (C)SafeLoader
    except _DuplicateKey as dup:
        raise SpecError(path, str(dup.key), f"duplicate key (first at line {dup.first})", dup.again) from None
    except SpecError as error:
        raise error.located(path) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        line = mark.line + 1 if mark is not None else None
        raise SpecError(path, None, f"invalid YAML: {problem}", line) from None
    except RecursionError:
        raise SpecError(path, None, "invalid YAML: nested too deeply") from None
    except ValueError as error:
        # A constructor's own refusal: an integer past Python's 4300 digits, a date of month 13.
        raise SpecError(path, None, f"invalid YAML: {str(error).split(';')[0]}") from None


def option(
    default: Any = MISSING,
    *,
    doc: str,
    aliases: tuple[str, ...] = (),
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    factory: Any = MISSING,
    example: Any = MISSING,
) -> Any:
    """A dataclass field with what the loader, the schema and the docs need to know of it."""
    metadata = {
        "doc": doc,
        "aliases": aliases,
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_minimum": exclusive_minimum,
        "example": example,
    }
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def yaml_fields(cls: type) -> Iterator[tuple[dataclasses.Field, Any]]:
    """The fields of a block that a YAML file may set, with their resolved types."""
    return iter(_yaml_fields(cls))


@functools.cache
def _yaml_fields(cls: type) -> tuple[tuple[dataclasses.Field, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((field, hints[field.name]) for field in dataclasses.fields(cls) if "doc" in field.metadata)


def describe_type(tp: Any) -> str:
    """The type in words, for error messages and docs."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_plural(describe_type(args[0]))}"
    if origin is dict:
        return f"a mapping of names to {_plural(describe_type(args[1]))}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false", Any: "any value"}.get(
        tp, str(tp)
    )


def _plural(words: str) -> str:
    if " or " in words:
        return f"({words})"
    for article in ("a ", "an "):
        if words.startswith(article):
            return words[len(article) :] + "s"
    return words


FOUND_LIMIT = 80


def _found(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int) and abs(value) >= 10**FOUND_LIMIT:
        # repr() itself refuses past 4300 digits.
        try:
            return f"an integer of {len(str(abs(value)))} digits"
        except ValueError:
            return "an integer of more digits than Python converts"
    shown = repr(value)
    if len(shown) > FOUND_LIMIT:
        # A 401-digit number or a pasted blob: its size says enough.
        shown = f"{shown[:20]}... ({len(shown)} characters)"
    return f"{shown} ({type(value).__name__})"


class Problem(Exception):
    """A value that does not fit its field; the converter adds the file and line."""

    def __init__(self, message: str, field: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message, self.field, self.line = message, field, line


def convert(tp: Any, value: Any, path: str, line: int | None) -> Any:
    """Check `value` against the type `tp`, building nested blocks; raise Problem if it does not fit."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = []
        for option_type in (a for a in args if a is not type(None)):
            try:
                return convert(option_type, value, path, line)
            except Problem as problem:
                if problem.field != path:  # a deeper field was wrong: that message is the useful one
                    raise
                problems.append(problem)
        if len(problems) == 1:  # an optional field: its one type's message (and hint) says it best
            raise problems[0]
        raise Problem(f"expected {describe_type(tp)}, found {_found(value)}", path, line)
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise Problem(f"expected one of {describe_type(tp)}, found {_found(value)}{hint}", path, line)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise Problem(f"expected {describe_type(tp)}, found {_found(value)}", path, line)
        items = [convert(args[0], item, f"{path}[{i}]", line) for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise Problem(f"expected {describe_type(tp)}, found {_found(value)}", path, line)
        lines = getattr(value, "lines", {})
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise Problem(f"keys must be strings, found {_found(key)}", path, lines.get(key, line))
            result[key] = convert(args[1], item, f"{path}.{key}", lines.get(key, line))
        return result
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, value, path, line)
    return _scalar(tp, value, path, line)


def _scalar(tp: Any, value: Any, path: str, line: int | None) -> Any:
    ok = {
        Any: True,
        str: isinstance(value, str),
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
    }.get(tp)
    if ok is None:
        raise TypeError(f"structure: unsupported field type {tp!r} at {path}")
    if not ok:
        raise Problem(f"expected {describe_type(tp)}, found {_found(value)}", path, line)
    if tp is float:
        try:
            value = float(value)
        except OverflowError:
            raise Problem(f"expected a finite number, found {_found(value)}", path, line) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise Problem(f"expected a finite number, found {value}", path, line)
    return value


def build(cls: type, data: Any, path: str, line: int | None) -> Any:
    """Build dataclass `cls` from a YAML mapping, field by field, then run its `check()`."""
    if not isinstance(data, dict):
        raise Problem(f"expected a mapping, found {_found(data)}", path or None, line)
    lines = getattr(data, "lines", {})
    names: dict[str, str] = {}
    for field, _ in yaml_fields(cls):
        names[field.name] = field.name
        names.update({alias: field.name for alias in field.metadata["aliases"]})
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), list(names), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(names))}"
            raise Problem(f"unknown key{hint}", f"{prefix}{key}", lines.get(key, line))
    kwargs = {}
    for field, tp in yaml_fields(cls):
        given = [k for k in [field.name, *field.metadata["aliases"]] if k in data]
        if len(given) > 1:
            raise Problem(
                f"given twice, as {' and '.join(repr(g) for g in given)}",
                f"{prefix}{given[0]}",
                lines.get(given[1], line),
            )
        if not given:
            if field.default is MISSING and field.default_factory is MISSING:
                raise Problem("required field is missing", f"{prefix}{field.name}", line)
            continue
        key = given[0]
        where = lines.get(key, line)
        value = convert(tp, data[key], f"{prefix}{field.name}", where)
        _check_bounds(field, value, f"{prefix}{field.name}", where)
        kwargs[field.name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        for field_name, message in check():
            raise Problem(message, f"{prefix}{field_name}", _line_of(cls, data, field_name, line))
    return obj


def _line_of(cls: type, data: dict, field_name: str, line: int | None) -> int | None:
    """The line of a field a check names: `name`, or a path into it such as `stages[1].loss.resume_jump_max`."""
    head, *rest = field_name.split(".")
    name, _, index = head.partition("[")
    key = next((k for k in [name, *_aliases(cls, name)] if k in data), name)
    found = getattr(data, "lines", {}).get(key, line)
    node = data.get(key)
    if index and isinstance(node, list) and index.rstrip("]").isdigit() and int(index.rstrip("]")) < len(node):
        node = node[int(index.rstrip("]"))]
        found = getattr(node, "line", found)
    for part in rest:
        if not isinstance(node, dict) or part not in node:
            break
        found, node = getattr(node, "lines", {}).get(part, found), node[part]
    return found


def _aliases(cls: type, name: str) -> tuple[str, ...]:
    for field in dataclasses.fields(cls):
        if field.name == name:
            return field.metadata.get("aliases", ())
    return ()


def _check_bounds(field: dataclasses.Field, value: Any, path: str, line: int | None) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    low, high = field.metadata["minimum"], field.metadata["maximum"]
    if low is not None:
        if field.metadata["exclusive_minimum"] and value <= low:
            raise Problem(f"must be greater than {low}, found {value}", path, line)
        if value < low:
            raise Problem(f"must be at least {low}, found {value}", path, line)
    if high is not None and value > high:
        raise Problem(f"must be at most {high}, found {value}", path, line)
