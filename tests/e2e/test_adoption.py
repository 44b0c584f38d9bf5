"""Adopting trainspec in someone else's repository: `harness init`, one spec, `nox -s smoke`.

The repository is a temporary git repo holding only a small third-party-style training
script: a pure-Python one (its venv builds in seconds), and a torch MLP trainer for the
first-try check a new user makes. nox runs from the environment these tests run in, which
has the harness and nox installed, as a user's would.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import forgather_on_path

pytestmark = pytest.mark.e2e

TRAINING_SCRIPT = """\
import argparse, json, os

parser = argparse.ArgumentParser(description="fit w to minimise w**2 by gradient descent")
parser.add_argument("--out", required=True)
parser.add_argument("--steps", type=int, default=40)
parser.add_argument("--lr", type=float, default=0.1)
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
w = 5.0
with open(os.path.join(args.out, "metrics.jsonl"), "w") as log:
    for step in range(1, args.steps + 1):
        w -= args.lr * 2 * w
        log.write(json.dumps({"step": step, "loss": w * w}) + "\\n")
print(f"final loss {w * w:.3g}")
"""

SPEC = """\
# yaml-language-server: $schema=trainspec.schema.json
id: fit_smoke
tier: smoke
command: ["{python}", "trainer/fit.py", "--out", "{output_dir}"]
args: {steps: 40}
gpus: 0
timeout: 60
min_steps_logged: 10
loss: {final_max: 0.01, must_decrease: true}
expected_files: [metrics.jsonl]
"""

MLP_TRAINER = """\
import argparse
import json
import os

import torch

parser = argparse.ArgumentParser(description="fit a small MLP to sin(x)")
parser.add_argument("--out", required=True)
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--lr", type=float, default=0.01)
args = parser.parse_args()
torch.manual_seed(0)
x = torch.linspace(-3, 3, 256).unsqueeze(1)
y = torch.sin(x)
model = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
os.makedirs(args.out, exist_ok=True)
with open(os.path.join(args.out, "train_log.jsonl"), "w") as log:
    for step in range(1, args.steps + 1):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.write(json.dumps({"step": step, "loss": loss.item()}) + "\\n")
torch.save(model.state_dict(), os.path.join(args.out, "model.pt"))
"""

# The generated spec as a user edits it for the MLP trainer; numpy's warning would mean the
# sessions lack what init said they install.
MLP_SPEC = """\
# yaml-language-server: $schema=trainspec.schema.json
id: train_smoke
tier: smoke
command: ["{python}", "trainer/mlp.py", "--out", "{output_dir}"]
args:
  steps: 100
gpus: 1
cpu_ok: true
timeout: 300
stderr:
  forbidden_patterns: ["Traceback (most recent call last)", "Failed to initialize NumPy"]
min_steps_logged: 50
loss:
  final_max: 0.1
  must_decrease: true
expected_files: [model.pt]
"""

FORGATHER_SPEC = """\
test_id: forgather_smoke
project_dir: proj
config: train.yaml
dynamic_args: {max_steps: 30, save_strategy: "no"}
loss: {final_max: 2.0, no_nan: true}
stderr: {forbidden_patterns: ["Traceback"]}
expected_files: [trainer_logs.json]
min_steps_logged: 2
timeout: 60
gpu_requirement: 0
markers: [smoke]
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    repo = tmp_path / "their-repo"
    (repo / "trainer").mkdir(parents=True)
    (repo / "trainer" / "fit.py").write_text(TRAINING_SCRIPT)
    (repo / "proj").mkdir()
    (repo / "proj" / "train.yaml").write_text("lr: 0.001\n")
    (repo / ".gitignore").write_text(".nox/\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "their code")
    return repo


def run(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TRAINSPEC_CACHE_DIR": str(repo.parent / "cache"), **(env or {})}
    full_env.pop("TRAINSPEC_SCORER", None)
    return subprocess.run([sys.executable, *args], cwd=repo, env=full_env, capture_output=True, text=True, timeout=900)


def unpin(repo: Path) -> None:
    """Drop the torch and transformers pins init took from this environment: the script here does not use them."""
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(re.sub(r"(?m)^(torch|transformers) = .*\n", "", pyproject.read_text()))


def test_init_then_smoke_passes_and_a_broken_script_fails_the_right_check(project: Path) -> None:
    init = run(project, "-m", "harness", "init")
    assert init.returncode == 0, init.stderr
    assert "wrote noxfile.py" in init.stdout and "nox -s smoke" in init.stdout
    assert (project / "specs" / "trainspec.schema.json").is_file()
    unpin(project)
    (project / "specs" / "train_smoke.yaml").unlink()
    (project / "specs" / "fit_smoke.yaml").write_text(SPEC)
    (project / "specs" / "forgather_smoke.yaml").write_text(FORGATHER_SPEC)
    path = {"PATH": f"{forgather_on_path(project.parent)}{os.pathsep}{os.environ['PATH']}"}
    assert run(project, "-m", "harness", "validate").returncode == 0

    green = run(project, "-m", "nox", "-s", "smoke", "standard", env=path)
    assert green.returncode == 0, green.stdout + green.stderr
    output = green.stdout + green.stderr
    assert "PASS  fit_smoke" in output and "PASS  forgather_smoke" in output
    assert git(project, "status", "--porcelain", "--", "trainer", "proj") == ""
    # The two tiers install the same requirements: one venv, filled once.
    assert [venv.name for venv in (project / ".nox").glob("trainspec-*") if venv.is_dir()] == [
        re.search(r"using \S+/(trainspec-\w+), shared", output)[1]
    ]
    assert output.count("requirements unchanged since the last install; skipping it") == 1

    script = project / "trainer" / "fit.py"
    script.write_text(script.read_text().replace("default=0.1", "default=1.5"))
    (project / "proj" / "train.yaml").write_text("lr: 100\ndiverge: true\n")
    red = run(project, "-m", "nox", "-s", "smoke", env=path)
    output = red.stdout + red.stderr
    assert red.returncode != 0, output
    assert (
        "Creating virtual environment" not in output
        and "requirements unchanged since the last install; skipping it" in output
    )
    assert "[FAIL] loss.final_max: expected final loss <= 0.01" in output
    assert "[FAIL] loss.must_decrease" in output
    # The diverging run is stopped at its NaN: one failure, what it left unchecked shown under it.
    assert (
        "[FAIL] fail_fast:" in output
        and "loss nan at step 15" in output
        and "then: loss.no_nan: nan at step 15" in output
    )

    # Their next script imports torch, which nothing pins: the session stops once, before any spec runs.
    (project / "trainer" / "mlp.py").write_text(MLP_TRAINER)
    stopped = run(project, "-m", "nox", "-s", "smoke", env=path)
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode != 0 and "harness run" not in output, output
    assert "this session's venv has no torch but trainer/mlp.py:5 imports torch: set torch = " in output
    assert "in [tool.trainspec] of pyproject.toml" in output


def test_init_keeps_existing_files_and_says_what_to_add(project: Path) -> None:
    (project / "noxfile.py").write_text("import nox\n")
    (project / "pyproject.toml").write_text('[project]\nname = "theirs"\n')
    result = run(project, "-m", "harness", "init")
    assert result.returncode == 0, result.stderr
    assert (project / "noxfile.py").read_text() == "import nox\n"
    assert "kept noxfile.py" in result.stdout and "define_sessions()" in result.stdout
    pyproject = (project / "pyproject.toml").read_text()
    assert pyproject.startswith('[project]\nname = "theirs"\n') and "[tool.trainspec]" in pyproject
    again = run(project, "-m", "harness", "init")
    assert "kept pyproject.toml (it has a [tool.trainspec] section already)" in again.stdout
    assert (project / "pyproject.toml").read_text() == pyproject


def torch_wheel_here(version: str) -> str | None:
    """Why pip cannot install `torch==version` from a wheel on this machine, or None when it can.

    The test never lets a session pull torch from an index: that would be the multi-GB CUDA build.
    """
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-deps",
            "--ignore-installed",
            "--quiet",
            "--report",
            "-",
            f"torch=={version}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if report.returncode != 0:
        return f"pip cannot resolve torch=={version} here: {report.stderr.strip()[-200:]}"
    (chosen,) = json.loads(report.stdout)["install"]
    url = chosen["download_info"]["url"]
    return None if url.startswith("file:") else f"torch=={version} resolves to a download ({url}), not a local wheel"


def test_a_torch_trainer_is_green_on_the_first_smoke_and_the_second_reuses_everything(project: Path) -> None:
    try:
        version = importlib.metadata.version("torch").split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("init pins the torch of the environment it runs in, and this one has none")
    if reason := torch_wheel_here(version):
        pytest.skip(reason)
    (project / "trainer" / "mlp.py").write_text(MLP_TRAINER)
    init = run(project, "-m", "harness", "init")
    assert init.returncode == 0, init.stderr
    assert f"the nox sessions will install: torch=={version} " in init.stdout and " numpy " in init.stdout, init.stdout
    (project / "specs" / "train_smoke.yaml").write_text(MLP_SPEC)

    started = time.monotonic()
    first = run(project, "-m", "nox", "-s", "smoke")
    first_seconds = time.monotonic() - started
    output = first.stdout + first.stderr
    assert first.returncode == 0, output
    assert "PASS  train_smoke" in output

    started = time.monotonic()
    second = run(project, "-m", "nox", "-s", "smoke")
    second_seconds = time.monotonic() - started
    output = second.stdout + second.stderr
    assert second.returncode == 0, output
    assert "PASS  train_smoke" in output and "Creating virtual environment" not in output
    assert "requirements unchanged since the last install; skipping it" in output
    print(f"first nox -s smoke {first_seconds:.1f} s, second {second_seconds:.1f} s")
