"""harness.spec.typed_yaml: located YAML, the typed converter and its one-line errors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from harness.spec.files import load_spec_file
from harness.spec.typed_yaml import Located, Problem, SpecError, build, convert, describe_type, load_yaml, option


# A small block of our own, so the converter is tested apart from the spec's fields.
@dataclass(frozen=True)
class Inner:
    size: int = option(1, doc="a size", minimum=1)


@dataclass(frozen=True)
class Block:
    name: str = option(doc="required name", aliases=("label",))
    ratio: float = option(0.5, doc="a ratio", minimum=0, maximum=1)
    count: int = option(3, doc="a positive count", minimum=0, exclusive_minimum=True)
    mode: Literal["fast", "slow"] = option("fast", doc="the mode")
    maybe_mode: Literal["fast", "slow"] | None = option(None, doc="an optional mode")
    tags: list[str] = option(factory=list, doc="tags")
    extra: dict[str, int] = option(factory=dict, doc="named counts")
    inner: Inner = option(factory=Inner, doc="a nested block")
    low: int = option(0, doc="must not exceed high")
    high: int = option(10, doc="must not be below low")

    def check(self) -> Iterable[tuple[str, str]]:
        if self.low > self.high:
            yield "low", f"low ({self.low}) is above high ({self.high})"


def load_block(write, text: str) -> Block:
    path = write("block.yaml", text)
    data = load_yaml(path)
    try:
        return build(Block, data, "", getattr(data, "line", 1))
    except Problem as problem:
        raise SpecError(path, problem.field, problem.message, problem.line) from None


def test_load_yaml_remembers_the_line_of_every_key(write):
    path = write(
        "lines.yaml",
        """
        # a comment first
        first: 1
        nested:
          inner: 2
          other: [a, b]
        """,
    )
    data = load_yaml(path)
    assert isinstance(data, Located)
    assert data.line == 2
    assert data.lines == {"first": 2, "nested": 3}
    assert data["nested"].lines == {"inner": 4, "other": 5}


def test_load_yaml_refuses_a_duplicate_key_naming_both_lines(write):
    path = write("dup.yaml", "a: 1\nb: 2\na: 3\n")
    with pytest.raises(SpecError) as caught:
        load_yaml(path)
    error = caught.value
    assert (error.field, error.line) == ("a", 3)
    assert "first at line 1" in error.message
    assert str(error) == f"{path}:3: a: duplicate key (first at line 1)"


def test_load_yaml_refuses_a_duplicate_key_in_a_nested_mapping(write):
    path = write("dup.yaml", "outer:\n  x: 1\n  x: 2\n")
    with pytest.raises(SpecError) as caught:
        load_yaml(path)
    assert (caught.value.field, caught.value.line) == ("x", 3)


def test_load_yaml_reports_syntax_errors_with_their_line(write):
    path = write("bad.yaml", "a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(SpecError) as caught:
        load_yaml(path)
    assert caught.value.message.startswith("invalid YAML: ")
    assert caught.value.line == 3
    assert "\n" not in str(caught.value)


def test_load_yaml_refuses_a_mapping_as_a_key(write):
    path = write("key.yaml", "ok: 1\n? [a, b]\n: 2\n")
    with pytest.raises(SpecError, match="a mapping key must be a plain value") as caught:
        load_yaml(path)
    assert caught.value.file == str(path)
    assert caught.value.line == 2


def test_load_yaml_reports_unreadable_files(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"id: \xff\xfe\n")
    with pytest.raises(SpecError, match="cannot read the file"):
        load_yaml(binary)
    with pytest.raises(SpecError, match="cannot read the file"):
        load_yaml(tmp_path / "missing.yaml")


def test_load_yaml_is_safe(write):
    path = write("unsafe.yaml", "a: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        load_yaml(path)


def test_spec_error_formats():
    assert str(SpecError("f.yaml", "timeout", "bad", 4)) == "f.yaml:4: timeout: bad"
    assert str(SpecError("f.yaml", None, "bad", None)) == "f.yaml: bad"
    assert str(SpecError(None, "x", "bad")) == "<spec>: x: bad"
    moved = SpecError(None, "x", "bad", 2).located("g.yaml")
    assert (moved.file, moved.field, moved.line) == ("g.yaml", "x", 2)


def test_build_fills_defaults_and_converts(write):
    block = load_block(write, "name: n\nratio: 1\ntags: [a, b]\nextra: {x: 2}\ninner: {size: 4}\n")
    assert block == Block(name="n", ratio=1.0, tags=["a", "b"], extra={"x": 2}, inner=Inner(size=4))
    assert isinstance(block.ratio, float)


def test_build_reads_aliases(write):
    assert load_block(write, "label: via-alias\n").name == "via-alias"


def test_build_refuses_name_and_alias_together(write):
    with pytest.raises(SpecError, match="given twice, as 'name' and 'label'") as caught:
        load_block(write, "name: a\nlabel: b\n")
    assert caught.value.line == 2


def test_build_reports_a_missing_required_field(write):
    with pytest.raises(SpecError) as caught:
        load_block(write, "ratio: 0.1\n")
    assert (caught.value.field, caught.value.message) == ("name", "required field is missing")


@pytest.mark.parametrize(
    ("text", "field", "fragment", "line"),
    [
        ("name: n\nnmae: x\n", "nmae", "did you mean 'name'?", 2),
        ("name: n\nqqqq: x\n", "qqqq", "known keys: count, extra", 2),
        ("name: n\ninner:\n  sise: 2\n", "inner.sise", "did you mean 'size'?", 3),
        ("name: n\nratio: 2\n", "ratio", "must be at most 1", 2),
        ("name: n\nratio: -1\n", "ratio", "must be at least 0", 2),
        ("name: n\ncount: 0\n", "count", "must be greater than 0", 2),
        ("name: n\ninner: {size: 0}\n", "inner.size", "must be at least 1", 2),
        ("name: n\nratio: .nan\n", "ratio", "expected a finite number", 2),
        ("name: n\nratio: .inf\n", "ratio", "expected a finite number", 2),
        ("name: n\ncount: true\n", "count", "expected an integer, found true (a boolean)", 2),
        ("name: n\nratio: yes\n", "ratio", "expected a number, found true (a boolean)", 2),
        ("name: 5\n", "name", "expected a string, found 5 (int)", 1),
        ("name: n\ntags: [a, 3]\n", "tags[1]", "expected a string, found 3 (int)", 2),
        ("name: n\ntags: a\n", "tags", "expected a list of strings, found 'a' (str)", 2),
        ("name: n\nextra: {x: one}\n", "extra.x", "expected an integer, found 'one' (str)", 2),
        ("name: n\nextra: {1: 2}\n", "extra", "keys must be strings", 2),
        ("name: n\ninner: 3\n", "inner", "expected a mapping, found 3 (int)", 2),
        ("name: n\nmode: fsat\n", "mode", "did you mean 'fast'?", 2),
        ("name: n\nmode: true\n", "mode", "found true (a boolean)", 2),
        ("name: n\nlow: 5\nhigh: 1\n", "low", "low (5) is above high (1)", 2),
    ],
)
def test_build_reports_each_problem_located(write, text, field, fragment, line):
    with pytest.raises(SpecError) as caught:
        load_block(write, text)
    error = caught.value
    assert error.field == field
    assert fragment in error.message
    assert error.line == line
    assert "\n" not in str(error)


def test_a_top_level_value_that_is_not_a_mapping():
    with pytest.raises(Problem, match="expected a mapping, found a list"):
        build(Block, [1, 2], "", 1)


def test_convert_keeps_ints_for_int_and_widens_for_float():
    assert convert(int, 3, "x", 1) == 3
    assert convert(float, 3, "x", 1) == 3.0
    assert convert(Any, {"anything": [1]}, "x", 1) == {"anything": [1]}
    assert convert(list[str] | str | None, None, "x", 1) is None
    assert convert(list[str] | str | None, "a b", "x", 1) == "a b"


def test_describe_type_in_words():
    assert describe_type(str) == "a string"
    assert describe_type(list[str]) == "a list of strings"
    assert describe_type(dict[str, int]) == "a mapping of names to integers"
    assert describe_type(Inner) == "a mapping"
    assert "'fast'" in describe_type(Literal["fast", "slow"]) and "'slow'" in describe_type(Literal["fast", "slow"])
    assert describe_type(int | None) == "an integer or null"


def test_an_optional_choice_gets_the_same_hint_as_a_required_one(write):
    with pytest.raises(SpecError) as caught:
        load_block(write, "name: n\nmaybe_mode: fsat\n")
    assert "did you mean 'fast'?" in caught.value.message


def test_a_list_file_may_share_a_base_through_a_yaml_merge_key(write):
    path = write(
        "shared.yaml",
        """
        - &base
          id: first
          command: ["{python}", "train.py"]
          timeout: 60
        - <<: *base
          id: second
        """,
    )
    specs = load_spec_file(path)
    assert [s.id for s in specs] == ["first", "second"]
    assert specs[1].timeout == 60


def test_a_real_duplicate_next_to_a_merge_key_is_still_refused(write):
    path = write(
        "shared.yaml",
        """
        - &base
          id: first
          command: ["{python}", "train.py"]
        - <<: *base
          id: second
          id: third
        """,
    )
    with pytest.raises(SpecError, match="duplicate key"):
        load_spec_file(path)
