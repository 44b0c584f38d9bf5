"""A backend is one class plus one registry line: a third one, defined in the test, runs a spec end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REPO

pytestmark = pytest.mark.e2e

BACKEND = Path(__file__).with_name("wrapped_backend.py")
SPEC = """\
id: through_the_wrapper
gpus: 2
timeout: 60
min_steps_logged: 0
command:
  - "{python}"
  - "-c"
  - "import os; print('devices', {gpus}, os.environ['WRAPPED_HOST'], os.environ.get('CUDA_VISIBLE_DEVICES'))"
"""


def wrapped(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "TRAINSPEC_CACHE_DIR": str(project / "cache"),
        "CUDA_VISIBLE_DEVICES": "3",
    }
    return subprocess.run(
        [sys.executable, str(BACKEND), *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "wrapped.yaml").write_text(SPEC)
    return tmp_path


def test_a_registered_backend_runs_a_spec_end_to_end(project: Path):
    run = wrapped(project, "run", "--backend", "wrapped", "--wrapped-host", "gpu-7", "--run-dir", "out")
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads((project / "out" / "results.json").read_text())
    record = results["specs"][0]
    assert results["backend"] == "wrapped" and record["outcome"] == "passed"
    assert record["placement"] == "wrapped on gpu-7" and record["device_kind"] == "wrapped"
    out = project / "out" / "specs" / "through_the_wrapper"
    # The backend placed it: 2 devices held, its own variable set, the caller's devices not leaked in.
    assert (out / "stdout.log").read_text().strip() == "devices 2 gpu-7 None"
    assert (out / "stderr.log").read_text().startswith("wrapped on gpu-7")
    assert (project / "cancelled-gpu-7.txt").read_text()


def test_its_options_and_name_join_the_cli(project: Path):
    shown = wrapped(project, "run", "--help")
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert "--wrapped-host HOST" in text and "(one of: local, slurm, wrapped)" in text


def test_a_backend_that_cannot_run_is_bad_usage(project: Path):
    run = wrapped(project, "run", "--backend", "wrapped", "--wrapped-host", "unreachable", "--run-dir", "out")
    assert run.returncode == 2 and run.stderr.strip() == "error: the wrapped host is unreachable"
    assert not (project / "out").exists()
