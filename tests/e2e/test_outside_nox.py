"""`python -m harness run` outside nox: it says which interpreter `{python}` is, and a spec that fails on a
module that interpreter lacks names the nox session whose venv has it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e


def test_a_missing_module_outside_nox_names_the_interpreter_and_the_session(harness, tmp_path: Path) -> None:
    spec = {
        "id": "needs_a_module",
        "command": ["{python}", "-c", "import numpy_that_is_not_here"],
        "gpus": 0,
        "cpu_ok": True,
        "min_steps_logged": 0,
    }
    path = tmp_path / "needs_a_module.yaml"
    path.write_text(yaml.safe_dump(spec))
    run = harness("run", str(path), env={"NOX_CURRENT_SESSION": ""})
    assert run.code == 1, run.output
    assert f"trainspec: {{python}} is {sys.executable} (not a nox session's venv" in run.output
    reason = run.spec("needs_a_module")["reason"]
    assert reason.startswith("ModuleNotFoundError: No module named 'numpy_that_is_not_here' ({python} is "), reason
    assert "no nox session installs numpy_that_is_not_here: add it to `install` in [tool.trainspec]" in reason
