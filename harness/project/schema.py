"""The spec format described from the loader's own definitions: JSON Schema and a field table.

Both are generated from the dataclasses in `spec/model.py` and `spec/sections.py`, so the reference in docs/ and the
schema an editor uses cannot drift from what the loader accepts.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import MISSING
from typing import Any, Literal, Union

from harness.spec.model import PLACEHOLDERS, Spec
from harness.spec.typed_yaml import describe_type, yaml_fields

SCHEMA_ID = "https://trainspec.invalid/spec.schema.json"


def _type_schema(tp: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return {"type": "null"}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        return {"anyOf": [_type_schema(a) for a in args]}
    if origin in (list, tuple):
        return {"type": "array", "items": _type_schema(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(args[1])}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return block_schema(tp)
    return {
        str: {"type": "string"},
        int: {"type": "integer"},
        float: {"type": "number"},
        bool: {"type": "boolean"},
    }.get(tp, {})


def _default(field: dataclasses.Field) -> Any:
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        value = field.default_factory()
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value
    return MISSING


def block_schema(cls: type) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for field, tp in yaml_fields(cls):
        schema = dict(_type_schema(tp))
        schema["description"] = field.metadata["doc"]
        default = _default(field)
        if default is not MISSING:
            schema["default"] = default
        if field.metadata["minimum"] is not None:
            key = "exclusiveMinimum" if field.metadata["exclusive_minimum"] else "minimum"
            schema = {"allOf": [schema, {"anyOf": [{"not": {"type": "number"}}, {key: field.metadata["minimum"]}]}]}
        for name in (field.name, *field.metadata["aliases"]):
            properties[name] = schema
    return {"type": "object", "properties": properties, "additionalProperties": False}


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one spec file; editors complete and check fields from it."""
    single = block_schema(Spec)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "trainspec spec",
        "anyOf": [single, {"type": "array", "items": single, "minItems": 1}],
    }


def _cell(value: Any) -> str:
    if value is MISSING:
        return "required"
    return f"`{json.dumps(value)}`"


def reference_rows(cls: type = Spec, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(field, type, default, meaning) for every field, nested blocks flattened as `block.field`."""
    rows = []
    for field, tp in yaml_fields(cls):
        name = prefix + field.name
        aliases = field.metadata["aliases"]
        meaning = field.metadata["doc"] + (f" (also read as {', '.join(f'`{a}`' for a in aliases)})" if aliases else "")
        dict_of_blocks = typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1])
        list_of_blocks = [
            a
            for a in typing.get_args(tp)
            if typing.get_origin(a) is list and dataclasses.is_dataclass(typing.get_args(a)[0])
        ]
        nested = (
            []
            if dict_of_blocks or list_of_blocks
            else [a for a in (typing.get_args(tp) or (tp,)) if isinstance(a, type) and dataclasses.is_dataclass(a)]
        )
        default = "none" if _default(field) is None else ("" if nested else _cell(_default(field)))
        rows.append((f"`{name}`", describe_type(tp), default, meaning))
        if nested:
            rows += reference_rows(nested[0], f"{name}.")
        elif list_of_blocks:
            rows += reference_rows(typing.get_args(list_of_blocks[0])[0], f"{name}[].")
        elif dict_of_blocks:
            rows += reference_rows(typing.get_args(tp)[1], f"{name}.<key>.")
    return rows


def _table(rows: list[tuple[str, str, str, str]], first: str) -> list[str]:
    lines = [f"| {first} | type | default | meaning |", "|---|---|---|---|"]
    return lines + [f"| {a} | {b} | {c} | {d.replace('|', '/')} |" for a, b, c, d in rows]


def settings_reference() -> str:
    """The keys of [tool.trainspec] (docs/adoption.md), from the definitions that read them."""
    from harness.project.settings import Settings

    return "\n".join(_table(reference_rows(Settings), "key")) + "\n"


def markdown_reference() -> str:
    lines = _table(reference_rows(), "field")
    lines += ["", "Placeholders in `command`, `args` and `env`:", ""]
    lines += [f"- `{{{name}}}`: {doc}" for name, doc in PLACEHOLDERS.items()]
    return "\n".join(lines) + "\n"
