"""harness.project.settings: [tool.trainspec] defaults, checks with named keys, and the command line winning."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from harness.cli import apply_settings
from harness.project.settings import Combination, Settings, load_settings
from harness.spec.typed_yaml import SpecError


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(text)
    return tmp_path


def test_no_pyproject_or_no_section_means_defaults(tmp_path):
    assert load_settings(tmp_path) == Settings()
    assert load_settings(write(tmp_path, "[project]\nname = 'x'\n")) == Settings()


def test_the_section_is_read_with_typed_blocks(tmp_path):
    settings = load_settings(
        write(
            tmp_path,
            """
[tool.trainspec]
specs = ["tests/specs"]
tier = "standard"
torch = "2.13.0"
install = ["-e ."]
matrix = [{ torch = "2.13.0", transformers = "5.23.0" }]
fake_gpus = 2
""",
        )
    )
    assert settings.specs == ["tests/specs"] and settings.tier == "standard" and settings.install == ["-e ."]
    assert settings.matrix == [Combination(torch="2.13.0", transformers="5.23.0")]
    assert settings.fake_gpus == 2 and settings.transformers is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("specz = ['x']", "tool.trainspec.specz: unknown key; did you mean 'specs'?"),
        ("gpus = 'two'", "tool.trainspec.gpus: expected an integer, found 'two'"),
        ("tier = 'smok'", "did you mean 'smoke'?"),
        ("gpus = 1\nfake_gpus = 2", "tool.trainspec.fake_gpus: give gpus or fake_gpus, not both"),
        (
            "matrix = [{ torch = '2.13.0', transformer = '5' }]",
            "tool.trainspec.matrix[0].transformer: unknown key; did you mean 'transformers'?",
        ),
        ("specs = [", "invalid TOML"),
    ],
)
def test_bad_settings_name_the_file_and_key(tmp_path, text, message):
    with pytest.raises(SpecError) as caught:
        load_settings(write(tmp_path, f"[tool.trainspec]\n{text}\n"))
    assert str(caught.value).startswith(f"{tmp_path / 'pyproject.toml'}: ")
    assert message in str(caught.value)


def test_the_command_line_wins_over_the_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings(tier="standard", scorer="/models/ref", fake_gpus=2, run_dir="runs/latest")
    given = argparse.Namespace(tier="smoke", scorer=None, gpus=None, fake_gpus=None, run_dir=None)
    apply_settings(given, settings)
    assert (given.tier, given.scorer, given.fake_gpus, given.gpus) == ("smoke", "/models/ref", 2, None)
    assert given.run_dir == str(tmp_path / "runs" / "latest")
    chosen_devices = argparse.Namespace(tier=None, scorer=None, gpus=1, fake_gpus=None, run_dir="mine")
    apply_settings(chosen_devices, settings)
    assert (chosen_devices.gpus, chosen_devices.fake_gpus, chosen_devices.run_dir, chosen_devices.tier) == (
        1,
        None,
        "mine",
        "standard",
    )
