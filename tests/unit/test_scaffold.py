"""`harness init`: starter files written once, existing ones kept, pyproject appended to."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from harness.project.scaffold import DEFAULT_INSTALL, init, installed_versions
from harness.project.schema import json_schema
from harness.project.settings import load_settings
from harness.spec.files import load_spec_file

from ..conftest import fresh_python

DOCS = Path(__file__).resolve().parents[2] / "docs"


# Real nox, run as a user has it when trainspec is not in nox's environment: no finder
# knows `harness` (the environment running the tests has it, so it is hidden here).
NOX_WITHOUT_HARNESS = """\
import sys


class NoHarness:
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "harness":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NoHarness())
from nox.__main__ import main

sys.argv[0] = "nox"
main()
"""


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An environment whose only installed distributions are these (name -> version): the
    environment running the tests may have torch, and init must see only what a test gives."""

    def install(**versions: str) -> None:
        site = tmp_path / "site"
        for name, version in versions.items():
            info = site / f"{name}-{version}.dist-info"
            info.mkdir(parents=True)
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        monkeypatch.setattr(
            sys, "path", [str(site), *(p for p in sys.path if not p.endswith(("site-packages", "dist-packages")))]
        )

    return install


def repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    return repo


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
    assert done.kept[:2] == [
        "noxfile.py (it exists; --force replaces it)",
        "specs/train_smoke.yaml (it exists; --force replaces it)",
    ]
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


def test_init_pins_the_installed_versions_without_their_local_label(tmp_path, environment):
    environment(torch="2.5.1+cu121", transformers="4.57.6")
    assert installed_versions() == {"torch": "2.5.1", "transformers": "4.57.6"}
    repo = repository(tmp_path)
    done = init(repo)
    settings = load_settings(repo)
    assert (settings.torch, settings.transformers, settings.install) == ("2.5.1", "4.57.6", ["numpy"])
    assert done.advice == ["the nox sessions will install: torch==2.5.1 transformers==4.57.6 numpy trainspec\n"]


def test_finding_the_installed_versions_imports_neither_library():
    """In a fresh interpreter: this test process may have imported torch through another test."""
    code = (
        "import sys; from harness.project.scaffold import installed_versions; installed_versions(); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    found = fresh_python(code)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"


def test_init_says_in_one_line_what_to_set_for_a_library_it_did_not_find(tmp_path, environment):
    environment(transformers="4.57.6")
    repo = repository(tmp_path)
    done = init(repo)
    assert load_settings(repo).torch is None and '# torch = "VERSION"' in (repo / "pyproject.toml").read_text()
    assert done.advice == [
        'torch not found here nor pinned: if your training imports it, set torch = "VERSION" in '
        "[tool.trainspec] of pyproject.toml\n",
        "the nox sessions will install: transformers==4.57.6 numpy trainspec\n",
    ]


def test_what_the_sessions_install_follows_a_section_the_project_had(tmp_path, environment):
    environment(torch="2.13.0")
    repo = repository(tmp_path)
    (repo / "pyproject.toml").write_text('[tool.trainspec]\ntransformers = "5.23.0"\ninstall = ["-e ."]\n')
    done = init(repo)
    assert done.advice[-1] == "the nox sessions will install: transformers==5.23.0 -e . trainspec\n"
    (repo / "pyproject.toml").write_text("[tool.trainspec]\ntorch = 2\n")
    assert not any("will install" in line for line in init(repo).advice)


def test_the_generated_noxfile_says_how_to_install_the_harness_beside_nox(tmp_path):
    init(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", NOX_WITHOUT_HARNESS, "-s", "smoke"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "lacks trainspec (No module named 'harness'): install it beside nox from a trainspec checkout" in (
        result.stderr
    )
    assert "`pipx inject nox PATH/TO/trainspec`" in result.stderr and "'trainspec @ git+URL'" in result.stderr
    assert "pip install trainspec`" not in result.stderr  # no such package resolves


def test_the_docs_say_what_init_and_the_sessions_install(tmp_path, environment):
    environment(torch="2.13.0", transformers="4.57.6")
    adoption = (DOCS / "adoption.md").read_text()
    (said,) = init(tmp_path).advice
    assert f"\n{said}" in adoption
    example = adoption.split("```toml\n", 1)[1].split("```", 1)[0]
    assert set(DEFAULT_INSTALL) <= set(tomllib.loads(example)["tool"]["trainspec"]["install"])
    tiers = (DOCS / "tiers.md").read_text()
    assert f"`install = {json.dumps(DEFAULT_INSTALL)}`" in tiers
