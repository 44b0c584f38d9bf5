"""Running only what changed, end to end: real runs of `python -m harness` in a temporary git
repository with two specs, whose scripts import their own module (alpha also reads a config)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

TRAIN = """\
import argparse, json, os, sys
import {module}

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
args = parser.parse_args()
{extra}
os.makedirs(args.out, exist_ok=True)
with open(os.path.join(args.out, "train_log.jsonl"), "w") as log:
    for step in range(1, 6):
        log.write(json.dumps({{"step": step, "loss": {module}.loss(step)}}) + "\\n")
"""

SPEC = """\
id: {name}
command: ["{{python}}", "{name}/train.py", "--out", "{{output_dir}}"]
gpus: 0
timeout: 60
loss: {{final_max: 1.0, must_decrease: true}}
min_steps_logged: 5
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    repo = tmp_path / "project"
    for name, extra in (
        ("alpha", 'config = json.load(open(os.path.join(os.path.dirname(__file__), "config.json")))'),
        ("beta", ""),
    ):
        (repo / name).mkdir(parents=True)
        (repo / name / "train.py").write_text(TRAIN.format(module=f"{name}_model", extra=extra))
        (repo / name / f"{name}_model.py").write_text("def loss(step):\n    return 1.0 / step\n")
    (repo / "alpha" / "config.json").write_text('{"lr": 0.1}\n')
    (repo / "specs").mkdir()
    for name in ("alpha", "beta"):
        (repo / "specs" / f"{name}.yaml").write_text(SPEC.format(name=name))
    (repo / "README.md").write_text("a project\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    return repo


def outcomes(run) -> dict[str, str]:
    return {spec["id"]: spec["outcome"] for spec in run.results["specs"]}


def test_skip_unchanged_reruns_only_what_a_change_touched(harness, project: Path) -> None:
    first = harness("run", "--skip-unchanged", cwd=project)
    assert first.code == 0, first.output
    assert outcomes(first) == {"alpha": "passed", "beta": "passed"}
    alpha = first.spec("alpha")
    assert {"alpha/train.py", "alpha/alpha_model.py", "alpha/config.json", "specs/alpha.yaml"} <= set(
        alpha["dependencies"]
    )
    assert "beta/beta_model.py" not in alpha["dependencies"]

    again = harness("run", "--skip-unchanged", cwd=project)
    assert again.code == 0, again.output
    assert outcomes(again) == {"alpha": "unchanged", "beta": "unchanged"}
    assert again.spec("alpha")["reason"].startswith(f"unchanged since it passed in {first.run_dir} at ")
    junit = (again.run_dir / "junit.xml").read_text()
    assert junit.count('type="pytest.skip" message="unchanged since it passed in') == 2
    assert "2 unchanged" in again.output

    (project / "beta" / "beta_model.py").write_text("def loss(step):\n    return 0.5 / step\n")
    assert outcomes(harness("run", "--skip-unchanged", cwd=project)) == {"alpha": "unchanged", "beta": "passed"}

    (project / "alpha" / "config.json").write_text('{"lr": 0.2}\n')
    assert outcomes(harness("run", "--skip-unchanged", cwd=project)) == {"alpha": "passed", "beta": "unchanged"}

    (project / "notes.txt").write_text("unrelated\n")
    assert outcomes(harness("run", "--skip-unchanged", cwd=project)) == {"alpha": "unchanged", "beta": "unchanged"}

    forced = harness("run", "--skip-unchanged", "--no-skip-unchanged", cwd=project)
    assert outcomes(forced) == {"alpha": "passed", "beta": "passed"}


def test_a_failure_is_never_reused(harness, project: Path) -> None:
    (project / "beta" / "beta_model.py").write_text("def loss(step):\n    return float(step)\n")
    assert outcomes(harness("run", "--skip-unchanged", cwd=project))["beta"] == "failed"
    assert outcomes(harness("run", "--skip-unchanged", cwd=project))["beta"] == "failed"


def test_changed_since_runs_the_specs_whose_dependencies_changed(harness, project: Path) -> None:
    assert harness("run", cwd=project).code == 0
    (project / "alpha" / "alpha_model.py").write_text("def loss(step):\n    return 0.9 / step\n")
    git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "alpha's model")

    plan = harness("plan", "--changed-since", "HEAD~1", cwd=project)
    assert plan.code == 0, plan.output
    lines = {
        line.split()[0]: line
        for line in plan.proc.stdout.splitlines()
        if line.startswith("  ") and line.split()[0] in ("alpha", "beta")
    }
    assert "run" in lines["alpha"].split() and "alpha/alpha_model.py changed" in lines["alpha"]
    assert "not run" in lines["beta"] and "none of its" in lines["beta"]

    run = harness("run", "--changed-since", "HEAD~1", cwd=project)
    assert run.code == 0, run.output
    assert outcomes(run) == {"alpha": "passed"}

    # An untracked file no spec used: everything is deselected, which is what was asked (exit 0).
    (project / "beta" / "notes.txt").write_text("x\n")
    nothing = harness("run", "--changed-since", "HEAD", cwd=project)
    assert nothing.code == 0, nothing.output
    assert "2 deselected" in nothing.output
    # An untracked file that is a dependency counts: beta's module, deleted and written anew, untracked.
    git(project, "rm", "-q", "--cached", "beta/beta_model.py")
    assert outcomes(harness("run", "--changed-since", "HEAD", cwd=project)) == {"beta": "passed"}


def test_a_spec_never_traced_runs_under_changed_since(harness, project: Path) -> None:
    plan = harness("plan", "--changed-since", "HEAD", cwd=project)
    assert plan.code == 0, plan.output
    assert plan.proc.stdout.count("no recorded trace") == 2


def test_a_bad_revision_is_bad_usage(harness, project: Path) -> None:
    for command in ("run", "plan"):
        bad = harness(command, "--changed-since", "no-such-ref", cwd=project)
        assert bad.code == 2
        assert "--changed-since: git knows no commit 'no-such-ref'" in bad.proc.stderr
        assert "Traceback" not in bad.output


def test_watch_globs_count_for_changed_since(harness, project: Path) -> None:
    spec = project / "specs" / "beta.yaml"
    spec.write_text(spec.read_text() + 'watch: ["scripts/**/*.sh"]\n')
    git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "watch")
    assert harness("run", cwd=project).code == 0
    (project / "scripts" / "deep").mkdir(parents=True)
    (project / "scripts" / "deep" / "prepare.sh").write_text("echo hi\n")
    plan = harness("plan", "--changed-since", "HEAD", cwd=project)
    assert "scripts/deep/prepare.sh changed (watch scripts/**/*.sh)" in plan.proc.stdout
    assert outcomes(harness("run", "--changed-since", "HEAD", cwd=project)) == {"beta": "passed"}


def test_a_corrupt_cache_entry_is_ignored_with_a_warning(harness, project: Path, tmp_path: Path) -> None:
    assert harness("run", "--skip-unchanged", cwd=project).code == 0
    entry = tmp_path / "cache" / "selection" / "alpha.json"
    assert json.loads(entry.read_text())["passes"]
    entry.write_bytes(b"\x00garbage{")
    run = harness("run", "--skip-unchanged", cwd=project)
    assert run.code == 0, run.output
    assert outcomes(run) == {"alpha": "passed", "beta": "unchanged"}
    assert "selection cache entry of alpha is unreadable" in run.output
    assert json.loads(entry.read_text())["passes"]


TORCHRUN_SCRIPT = textwrap.dedent(
    """\
    import json, os, sys
    import torch.distributed as dist

    dist.init_process_group("gloo")
    if dist.get_rank() == 1:
        import rank_one_only
    dist.destroy_process_group()
    if os.environ["RANK"] == "0":
        with open(os.path.join(sys.argv[1], "train_log.jsonl"), "w") as log:
            for step in range(1, 4):
                log.write(json.dumps({"step": step, "loss": 1.0 / step}) + "\\n")
    """
)


def test_a_torchrun_trace_includes_a_module_only_rank_one_imported(harness, tmp_path: Path) -> None:
    repo = tmp_path / "ddp"
    (repo / "specs").mkdir(parents=True)
    (repo / "ranks.py").write_text(TORCHRUN_SCRIPT)
    (repo / "rank_one_only.py").write_text("VALUE = 1\n")
    (repo / "specs" / "ddp.yaml").write_text(
        'id: ddp\nlauncher: torchrun\ncommand: ["ranks.py", "{output_dir}"]\ngpus: 2\ncpu_ok: true\ntimeout: '
        "120\nloss: {final_max: 1.0}\nmin_steps_logged: 3\n"
    )
    git(repo, "init", "-q")
    run = harness("run", "--fake-gpus", "2", cwd=repo)
    assert run.code == 0, run.output
    assert {"ranks.py", "rank_one_only.py", "specs/ddp.yaml"} <= set(run.spec("ddp")["dependencies"])
    traces = list((run.run_dir / "specs" / "ddp" / "trace").glob("trace-*.json"))
    assert len(traces) >= 3  # torchrun itself and both ranks
    assert sum("rank_one_only.py" in json.loads(t.read_text())["files"] for t in traces) == 1
