"""Measured GPU memory through the real harness, with a stand-in nvidia-smi that reports what
the runs' processes (and a foreign one) pretend to use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..gpu_stand_ins import install_nvidia_smi

pytestmark = pytest.mark.e2e

USER = Path(__file__).with_name("gpu_memory_user.py")
GPU0 = "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"
GPU1 = "GPU-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def write_spec(folder: Path, name: str, apps: Path, phases: str, **fields: object) -> None:
    command = ["{python}", str(USER), "--apps", str(apps), "--uuid", GPU0, "--other-uuid", GPU1, "--phases", phases]
    spec = {"id": name, "command": command, "gpus": 1, "cpu_ok": True, "timeout": 120, "min_steps_logged": 0, **fields}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(json.dumps(spec))


def gpu_machine(tmp_path: Path, fail_every: int = 0) -> tuple[dict[str, str], Path]:
    """An environment whose nvidia-smi lists two H100s and reports the processes writing into the apps folder."""
    apps = tmp_path / "apps"
    apps.mkdir()
    # Another user's job on the run's GPU: never counted as the run's.
    (apps / "foreign.csv").write_text(f"{GPU0}, 1, 30000\n")
    bin_dir = install_nvidia_smi(tmp_path / "bin", apps=apps, apps_fail_every=fail_every)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "TRAINSPEC_LEASE_DIR": str(tmp_path / "leases"),
        "TRAINSPEC_CACHE_DIR": str(tmp_path / "cache"),
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env, apps


def harness(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )


def test_peak_memory_is_measured_warned_about_and_planned_by(tmp_path: Path) -> None:
    env, apps = gpu_machine(tmp_path)
    project = tmp_path / "project"
    write_spec(project / "specs", "grows", apps, "3000:1.5,6000:2.5", gpu_memory="5GiB")
    write_spec(project / "specs", "measured", apps, "2000:2.5", gpu_memory="auto")
    run = harness(project, env, "run", "--gpus", "1", "--run-dir", str(tmp_path / "run1"))
    assert run.returncode == 0, run.stdout + run.stderr
    specs = {s["id"]: s for s in json.loads((tmp_path / "run1" / "results.json").read_text())["specs"]}
    # The grandchild's usage on the run's GPU, not the foreign 30000 MiB nor its own 999 MiB on GPU 1.
    assert specs["grows"]["peak_gpu_memory"] == {"0": 6000}
    assert specs["measured"]["peak_gpu_memory"] == {"0": 2000}
    warning = next(w for w in specs["grows"]["warnings"] if "gpu_memory" in w)
    assert "6000 MiB on device 0" in warning and "5120 MiB" in warning and "5GiB" in warning
    check = next(c for c in specs["grows"]["checks"] if c["name"] == "gpu_memory")
    assert (check["passed"], check["severity"]) == (False, "warn")
    # An auto spec without a peak on record held its device whole: nothing declared, nothing to warn of.
    assert not any(c["name"] == "gpu_memory" for c in specs["measured"]["checks"])
    assert "peak MiB" in run.stdout and "6000" in run.stdout
    assert "peak GPU memory" in (tmp_path / "run1" / "report.html").read_text()
    # The next plan packs the auto spec by its recorded peak plus the 10% headroom.
    plan = harness(project, env, "plan", "--gpus", "1")
    assert plan.returncode == 0, plan.stderr
    row = next(line for line in plan.stdout.splitlines() if " measured " in f" {line} ")
    assert "2200 MiB" in row


@pytest.mark.parametrize("fail_every", [1, 2], ids=["every-sample-fails", "every-other-sample-fails"])
def test_a_failing_nvidia_smi_sample_is_skipped_never_failing_the_run(tmp_path: Path, fail_every: int) -> None:
    env, apps = gpu_machine(tmp_path, fail_every)
    project = tmp_path / "project"
    write_spec(project / "specs", "steady", apps, "4000:4", gpu_memory="5GiB")
    run = harness(project, env, "run", "--gpus", "1", "--run-dir", str(tmp_path / "run"))
    assert run.returncode == 0, run.stdout + run.stderr
    (spec,) = json.loads((tmp_path / "run" / "results.json").read_text())["specs"]
    assert spec["outcome"] == "passed"
    assert spec["peak_gpu_memory"] == ({} if fail_every == 1 else {"0": 4000})
    assert spec["warnings"] == []
