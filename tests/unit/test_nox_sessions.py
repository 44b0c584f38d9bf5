"""harness.project.nox_sessions: where the harness is installed from, and which tier a session runs."""

from __future__ import annotations

import subprocess
import types
from pathlib import Path

import nox
import pytest

from harness.project.import_check import Importer, importers
from harness.project.nox_sessions import (
    chosen_tier,
    define_sessions,
    harness_requirement,
    installed_from,
    pins,
    remove_superseded,
)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """nox's session registry, empty for the test and restored after it."""
    sessions: dict = {}
    monkeypatch.setattr(nox.registry, "_REGISTRY", sessions)
    return sessions


def session(*posargs: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(posargs=list(posargs))


def test_a_source_checkout_is_installed_editable():
    requirement = harness_requirement()
    assert requirement[0] == "-e" and (Path(requirement[1]) / "harness" / "project" / "nox_sessions.py").is_file()


def test_an_installed_harness_is_installed_again_from_where_pip_got_it():
    git = '{"url": "https://git.example/trainspec.git", "vcs_info": {"vcs": "git", "commit_id": "abc123"}}'
    assert installed_from(git) == ["trainspec @ git+https://git.example/trainspec.git@abc123"]
    editable = '{"url": "file:///src/trainspec", "dir_info": {"editable": true}}'
    assert installed_from(editable) == ["-e", "/src/trainspec"]
    assert installed_from('{"url": "file:///src/trainspec", "dir_info": {}}') == ["trainspec @ file:///src/trainspec"]


def test_the_last_tier_in_the_posargs_wins_as_argparse_reads_it():
    assert chosen_tier(session(), "standard") == "standard"
    assert chosen_tier(session("--tier", "smoke", "-x"), "standard") == "smoke"
    assert chosen_tier(session("--tier=smoke", "--tier", "full"), "standard") == "full"
    assert chosen_tier(session("--tier"), "standard") == "standard"


def test_pins_leave_out_what_is_not_pinned():
    assert pins("2.13.0", None) == ["torch==2.13.0"]
    assert pins(None, None) == []


def paths(found: dict[str, Importer]) -> dict[str, str]:
    return {name: importer.path for name, importer in found.items()}


def test_importers_name_the_first_project_file_importing_each_library(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "fit.py").write_text("import json\nfrom torch import nn\n")
    (tmp_path / "train" / "notes.py").write_text(
        '"""Uses torchvision, says: import torch later."""\nimport torchvision\n'
    )
    (tmp_path / "serve.py").write_text("def load():\n    import transformers\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "site.py").write_text("import torch\n")
    (tmp_path / ".venv" / ".gitignore").write_text("*\n")  # as virtualenv and venv write it
    assert paths(importers(tmp_path, ["torch", "transformers"])) == {
        "torch": "train/fit.py",
        "transformers": "serve.py",
    }
    # In a git checkout: tracked and untracked files count, ignored ones do not.
    (tmp_path / ".gitignore").write_text("train/fit.py\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "gen.py").write_text("import torch\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "serve.py"], cwd=tmp_path, check=True)
    assert paths(importers(tmp_path, ["torch", "transformers"])) == {
        "torch": "build/gen.py",
        "transformers": "serve.py",
    }
    (tmp_path / ".gitignore").write_text("train/fit.py\nbuild/\n")
    assert paths(importers(tmp_path, ["torch", "transformers"])) == {"transformers": "serve.py"}


def test_every_session_reuses_its_venv(tmp_path, registry):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.trainspec]\ntorch = "2.13.0"\nmatrix = [{ torch = "2.13.0" }]\ntests = ["tests"]\n'
    )
    define_sessions(tmp_path)
    assert sorted(registry) == ["full", "matrix", "smoke", "standard", "tests"]
    assert all(func.reuse_venv is True for func in registry.values())


def test_only_an_import_that_runs_when_its_module_is_imported_counts_as_module_level(tmp_path):
    (tmp_path / "model.py").write_text(
        "import json\n"
        "try:\n    import transformers\nexcept ImportError:\n    transformers = None\n"
        "def load_pretrained():\n    from transformers import AutoModel\n    return AutoModel\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
    )
    found = importers(tmp_path, ["torch", "transformers"])
    assert found == {"transformers": Importer("model.py", 3, False), "torch": Importer("model.py", 11, False)}
    assert found["transformers"].describe("transformers") == (
        "model.py:3 imports transformers only inside a function or under try/except ImportError"
    )
    (tmp_path / "train.py").write_text("class Trainer:\n    import torch\nif True:\n    from torch import nn\n")
    found = importers(tmp_path, ["torch", "transformers"])
    assert found["torch"] == Importer("train.py", 2, True)  # a class body runs on import
    assert not found["transformers"].at_module_level


def test_a_changed_pin_removes_the_venv_the_session_used_before(tmp_path):
    logged: list[str] = []
    session = types.SimpleNamespace(name="smoke", log=logged.append)
    old, new, shared = (tmp_path / f"trainspec-{key}" for key in ("aaa", "bbb", "ccc"))
    for venv in (old, new, shared):
        venv.mkdir()
    remove_superseded(session, old)
    remove_superseded(types.SimpleNamespace(name="tests", log=logged.append), shared)
    remove_superseded(session, new)
    assert (
        not old.exists()
        and new.exists()
        and logged == [f"removed {old}: the venv this session used before its requirements changed"]
    )
    # A venv another session still uses stays.
    remove_superseded(types.SimpleNamespace(name="standard", log=logged.append), new)
    remove_superseded(types.SimpleNamespace(name="tests", log=logged.append), new)
    assert shared.exists() is False and new.exists()
