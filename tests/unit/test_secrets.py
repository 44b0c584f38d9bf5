"""harness.secrets: credential-named variables are masked in everything the harness writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.checks.after_run import CheckResult
from harness.launch import Launch
from harness.runner.pipeline import failure_message
from harness.runner.stages import write_launch
from harness.secrets import MASK, Masker, is_secret, masker_for
from harness.spec.files import spec_from_mapping

SECRET = "s3cr3t-value"


@pytest.mark.parametrize(
    "name",
    [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "WANDB_API_KEY",
        "OPENAI_APIKEY",
        "AWS_SECRET_ACCESS_KEY",
        "PGPASSWORD",
        "DB_PASSWD",
        "NPM_AUTH_TOKEN",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GITHUB_PAT",
        "hf_token",
        "SECRET",
    ],
)
def test_credential_names_are_secret(name):
    assert is_secret(name, SECRET)


@pytest.mark.parametrize(
    "name",
    [
        "TOKENIZERS_PARALLELISM",
        "GIT_AUTHOR_NAME",
        "KEYBOARD_LAYOUT",
        "MONKEY",
        "PATH",
        "CUDA_VISIBLE_DEVICES",
        "PYTHONHASHSEED",
        "TRAINSPEC_SPEC_ID",
    ],
)
def test_other_names_are_not(name):
    assert not is_secret(name, SECRET)


@pytest.mark.parametrize("value", ["", "1", "abc", "true", "False", "none"])
def test_short_values_and_flags_are_not_masked(value):
    """Masking them would blank every '1' or 'true' in a report, and hide nothing."""
    assert not is_secret("HF_TOKEN", value)


def test_every_occurrence_is_masked_and_the_longest_secret_first():
    masker = Masker({"abcd", "abcd-efgh"})
    assert masker.text("x abcd-efgh y abcd z abcdabcd") == f"x {MASK} y {MASK} z {MASK}{MASK}"


def test_json_like_data_is_masked_anywhere_and_nothing_else_changes():
    masker = masker_for({"HF_TOKEN": SECRET, "TOKENIZERS_PARALLELISM": "false", "HOME": "/home/me"})
    data = {
        "argv": ["train.py", f"--token={SECRET}"],
        "env": {"HF_TOKEN": SECRET, "HOME": "/home/me"},
        SECRET: [1.5, None, True, {"deep": f"a {SECRET} b"}],
    }
    assert masker.data(data) == {
        "argv": ["train.py", f"--token={MASK}"],
        "env": {"HF_TOKEN": MASK, "HOME": "/home/me"},
        MASK: [1.5, None, True, {"deep": f"a {MASK} b"}],
    }
    assert masker.text("false and /home/me") == "false and /home/me"


def test_an_environment_without_secrets_changes_nothing():
    data = {"a": ["b", 1]}
    assert masker_for({"HOME": "/root"}).data(data) is data


def test_launch_json_masks_the_environment_and_the_command(tmp_path):
    env = {"HF_TOKEN": SECRET, "TRAINSPEC_PROBE": "kept"}
    launch = Launch([sys.executable, "train.py", "--token", SECRET], tmp_path, env, tmp_path, 10)
    write_launch(launch, masker_for(env))
    written = (tmp_path / "launch.json").read_text()
    assert SECRET not in written
    document = json.loads(written)
    assert document["env"]["HF_TOKEN"] == MASK and document["env"]["TRAINSPEC_PROBE"] == "kept"
    assert document["argv"][-1] == MASK


def test_the_failure_message_masks_what_the_child_echoed(tmp_path):
    stderr = tmp_path / "stderr.log"
    stderr.write_text(f"using token {SECRET}\nTraceback (most recent call last):\n")
    spec = spec_from_mapping({"id": "leaky", "command": ["x"]}, Path("leaky.yaml"))
    failed = [CheckResult("stderr.forbidden_patterns", False, "no 'Traceback' in stderr", f"line 1: {SECRET}")]
    message = failure_message(spec, failed, stderr, tmp_path, masker_for({"HF_TOKEN": SECRET}))
    assert SECRET not in message
    assert f"using token {MASK}" in message and f"line 1: {MASK}" in message
