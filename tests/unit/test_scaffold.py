"""`harness init`: starter files written once, existing ones kept, pyproject appended to."""

from __future__ import annotations

import json
import tomllib

import pytest

from harness.config import load_settings
from harness.scaffold import init
from harness.schema import json_schema
from harness.specfiles import load_spec_file


def test_a_fresh_repository_gets_every_starter_file(tmp_path):
    done = init(tmp_path)
    assert done.wrote == ["noxfile.py", "specs/train_smoke.yaml", "specs/trainspec.schema.json", "pyproject.toml"]
    assert "define_sessions()" in (tmp_path / "noxfile.py").read_text()
    compile((tmp_path / "noxfile.py").read_text(), "noxfile.py", "exec")
    spec_text = (tmp_path / "specs" / "train_smoke.yaml").read_text()
    assert spec_text.startswith("# yaml-language-server: $schema=trainspec.schema.json\n")
    (spec,) = load_spec_file(tmp_path / "specs" / "train_smoke.yaml")
    assert spec.id == "train_smoke" and spec.effective_tier == "smoke"
    assert json.loads((tmp_path / "specs" / "trainspec.schema.json").read_text()) == json_schema()
    assert load_settings(tmp_path).specs == ["specs"]


def test_existing_files_are_kept_unless_forced(tmp_path):
    (tmp_path / "noxfile.py").write_text("import nox\n")
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "train_smoke.yaml").write_text("id: mine\n")
    done = init(tmp_path)
    assert (tmp_path / "noxfile.py").read_text() == "import nox\n"
    assert (tmp_path / "specs" / "train_smoke.yaml").read_text() == "id: mine\n"
    assert done.kept[:2] == ["noxfile.py (it exists; --force replaces it)", "specs/train_smoke.yaml (it exists; --force replaces it)"]
    assert "define_sessions()" in done.advice[0]
    forced = init(tmp_path, force=True)
    assert "noxfile.py" in forced.wrote and "define_sessions()" in (tmp_path / "noxfile.py").read_text()


def test_a_pyproject_gets_the_section_appended_once(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "theirs"\n')
    assert "pyproject.toml [tool.trainspec] (appended)" in init(tmp_path).wrote
    text = (tmp_path / "pyproject.toml").read_text()
    assert tomllib.loads(text)["project"]["name"] == "theirs" and "trainspec" in tomllib.loads(text)["tool"]
    assert "pyproject.toml (it has a [tool.trainspec] section already)" in init(tmp_path, force=True).kept
    assert (tmp_path / "pyproject.toml").read_text() == text


def test_a_broken_pyproject_is_not_touched(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project\n")
    with pytest.raises(ValueError, match="invalid TOML, not touching it"):
        init(tmp_path)
    assert (tmp_path / "pyproject.toml").read_text() == "[project\n"
