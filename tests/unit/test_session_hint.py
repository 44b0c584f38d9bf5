"""A spec that failed on `No module named X` outside nox: the root error names the interpreter and the session."""

from __future__ import annotations

import sys

from harness.checks.after_run import CheckResult
from harness.runner.session_hint import with_session_hint


def failed(cause: str) -> list[CheckResult]:
    return [CheckResult("exit_code", False, "exit code 0", "exit code 1", cause=cause)]


def test_a_missing_module_names_the_interpreter_and_the_session_that_installs_it(tmp_path, monkeypatch):
    monkeypatch.delenv("NOX_CURRENT_SESSION", raising=False)
    (tmp_path / "pyproject.toml").write_text('[tool.trainspec]\ntorch = "2.13.0"\ninstall = ["numpy>=1.26", "-e ."]\n')
    [check] = with_session_hint(failed("ModuleNotFoundError: No module named 'numpy'"), "smoke", tmp_path)
    assert check.cause == (
        f"ModuleNotFoundError: No module named 'numpy' ({{python}} is {sys.executable}, not a nox session's venv:"
        " `nox -s smoke` runs this spec in a venv that installs numpy>=1.26)"
    )
    [check] = with_session_hint(failed("ModuleNotFoundError: No module named 'torch.nn'"), "full", tmp_path)
    assert check.cause.endswith("`nox -s full` runs this spec in a venv that installs torch==2.13.0)")
    [check] = with_session_hint(failed("ModuleNotFoundError: No module named 'scipy'"), "smoke", tmp_path)
    assert check.cause.endswith(
        "no nox session installs scipy: add it to `install` in [tool.trainspec] of pyproject.toml)"
    )


def test_inside_nox_and_for_other_errors_the_cause_stays(tmp_path, monkeypatch):
    monkeypatch.delenv("NOX_CURRENT_SESSION", raising=False)
    other = failed("RuntimeError: boom")
    assert with_session_hint(other, "smoke", tmp_path) == other
    monkeypatch.setenv("NOX_CURRENT_SESSION", "smoke")
    missing = failed("ModuleNotFoundError: No module named 'numpy'")
    assert with_session_hint(missing, "smoke", tmp_path) == missing
