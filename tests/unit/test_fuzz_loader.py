"""Property-based fuzzing of the spec loader: whatever a file holds, loading it either gives
specs or raises the harness's own SpecError naming that file; nothing else escapes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.spec.files import load_spec_file
from harness.spec.model import Spec
from harness.spec.sections import LossSpec
from harness.spec.typed_yaml import SpecError

KNOWN_KEYS = [f.name for f in dataclasses.fields(Spec) if f.init and f.name not in ("source", "line", "key_lines")]
LOSS_KEYS = [f.name for f in dataclasses.fields(LossSpec)]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.text(max_size=20)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
KEYS = st.one_of(
    st.sampled_from(KNOWN_KEYS + ["test_id", "dynamic_args", "gpu_requirement", "project_dir", "config"]),
    st.text(max_size=12),
)
SPEC_LIKE = st.dictionaries(
    KEYS, st.one_of(VALUES, st.dictionaries(st.sampled_from(LOSS_KEYS), SCALARS, max_size=4)), max_size=10
)
settings_for_files = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def load_or_fail(path: Path) -> None:
    try:
        load_spec_file(path)
    except SpecError as error:
        assert error.file == str(path), f"{error!r} does not name {path}"
        assert str(error).startswith(str(path))


@settings_for_files
@given(content=st.one_of(st.text(max_size=400), st.binary(max_size=300)))
def test_any_text_or_bytes_load_or_fail_naming_the_file(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    load_or_fail(path)


@settings_for_files
@given(mapping=st.one_of(SPEC_LIKE, st.lists(SPEC_LIKE, max_size=3)))
def test_spec_shaped_yaml_loads_or_fails_naming_the_file(tmp_path_factory, mapping):
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_text(yaml.safe_dump(mapping, allow_unicode=True))
    load_or_fail(path)
