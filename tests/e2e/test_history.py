"""The run history end to end: real runs of `python -m harness` appending to one store, flaky specs quarantined,
and `harness bisect` walking a real git history."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

from .common import expect_exit, harness_in

pytestmark = pytest.mark.e2e

# A trainer in a few lines of Python (no torch): its loss settles at LEVEL, read from a module the commits change.
TRAIN = """\
import argparse, json, os
from level import LEVEL

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
with open(os.path.join(args.out, "train_log.jsonl"), "w") as log:
    for step in range(1, 6):
        log.write(json.dumps({"step": step, "loss": LEVEL + 1.0 / step}) + "\\n")
"""
SPEC = """\
id: {name}
command: ["{{python}}", "train.py", "--out", "{{output_dir}}"]
gpus: 0
timeout: 120
loss: {{final_max: 0.5}}
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def make_project(repo: Path, specs: tuple[str, ...] = ("tiny",)) -> None:
    (repo / "specs").mkdir(parents=True)
    (repo / "train.py").write_text(TRAIN)
    (repo / "level.py").write_text("LEVEL = 0.1\n")
    (repo / "pyproject.toml").write_text('[tool.trainspec]\nspecs = ["specs"]\n')
    for name in specs:
        (repo / "specs" / f"{name}.yaml").write_text(SPEC.format(name=name))
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "commit 1")


def test_bisect_names_the_commit_that_made_the_loss_worse(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    make_project(repo)
    commits = [git(repo, "rev-parse", "HEAD")]
    for n in range(2, 17):
        # Commit 11 raises the loss past the spec's bound; the others touch nothing the loss depends on.
        if n == 11:
            (repo / "level.py").write_text("LEVEL = 0.4\n")
        else:
            (repo / "notes.txt").write_text(f"note {n}\n")
        git(repo, "add", ".")
        git(repo, "commit", "-qm", f"commit {n}")
        commits.append(git(repo, "rev-parse", "HEAD"))
    (repo / "notes.txt").write_text("an uncommitted edit\n")
    status = git(repo, "status", "--porcelain")
    done = harness_in(repo, _env(tmp_path), "bisect", "tiny", "--good", commits[0], "--bad", commits[15], timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith(f"first bad commit: {commits[10]} commit 11 ("), done.stdout
    spec_runs = int(last.rsplit("(", 1)[1].split()[0])
    assert spec_runs <= 5, done.stdout
    assert "commit 11" in done.stdout and "bad" in done.stdout
    # The user's tree and its worktree list are as they were.
    assert git(repo, "status", "--porcelain") == status
    assert git(repo, "worktree", "list").count("\n") == 0


def test_bisect_refuses_refs_that_name_no_range(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    make_project(repo)
    done = harness_in(repo, _env(tmp_path), "bisect", "tiny", "--good", "HEAD", "--bad", "nonsense", timeout=300)
    expect_exit(done, 2)
    assert done.stderr.startswith("error: git rev-parse"), done.stderr


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TRAINSPEC_CACHE_DIR": str(tmp_path / "cache")}


def _harness(repo: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return harness_in(repo, _env(tmp_path), *args, timeout=600)


def test_two_concurrent_runs_with_workers_append_every_row(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    make_project(repo, specs=tuple(f"s{i}" for i in range(6)))
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "harness", "run", "--workers", "2", "--run-dir", str(tmp_path / f"run{n}")],
            cwd=repo,
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(2)
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    with sqlite3.connect(tmp_path / "cache" / "history.sqlite") as store:
        assert store.execute("SELECT count(*) FROM runs").fetchone() == (2,)
        assert store.execute("SELECT count(*), count(DISTINCT run_id) FROM spec_runs").fetchone() == (12, 2)
    shown = _harness(repo, tmp_path, "history", "s0", "--json")
    assert shown.returncode == 0, shown.stderr
    assert [p["outcome"] for p in json.loads(shown.stdout)["specs"]["s0"]] == ["passed", "passed"]


# Fails every other run: on a failing run by its exit code (code), or by its loss bound (numeric) with NUMERIC set.
WOBBLY = """import json, os, sys
counter = os.environ["COUNTER"]
count = int(open(counter).read()) if os.path.exists(counter) else 0
open(counter, "w").write(str(count + 1))
os.makedirs(sys.argv[1], exist_ok=True)
failing = count % 2 == 1
loss = 0.9 if failing and os.environ.get("NUMERIC") else 0.2
with open(os.path.join(sys.argv[1], "train_log.jsonl"), "w") as log:
    log.write(json.dumps({"step": 1, "loss": loss}) + "\\n")
sys.exit(1 if failing and not os.environ.get("NUMERIC") else 0)
"""
WOBBLY_SPEC = """\
id: {name}
command: ["{{python}}", "wobbly.py", "{{output_dir}}"]
env: {{COUNTER: "{counter}"{numeric}}}
gpus: 0
timeout: 120
loss: {{final_max: 0.5}}
"""


def test_quarantine_forgives_a_flaky_failure_but_never_a_numeric_one(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    make_project(repo, specs=())
    (repo / "wobbly.py").write_text(WOBBLY)
    for name, numeric in (("wobbly", ""), ("shaky", ', NUMERIC: "1"')):
        counter = tmp_path / f"{name}.count"
        (repo / "specs" / f"{name}.yaml").write_text(WOBBLY_SPEC.format(name=name, counter=counter, numeric=numeric))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "wobbly specs")
    first = _harness(repo, tmp_path, "run")
    assert first.returncode == 0, first.stdout + first.stderr
    second = _harness(repo, tmp_path, "run")
    assert second.returncode == 1
    assert "NEW   wobbly: failed; it passed the last time on the same code" in second.stdout
    assert _harness(repo, tmp_path, "run").returncode == 0
    # Both have passed and failed on unchanged code now: the next failures are a flaky spec's.
    forgiven = _harness(repo, tmp_path, "run", "--quarantine", "specs/wobbly.yaml")
    assert forgiven.returncode == 0, forgiven.stdout + forgiven.stderr
    assert "FLAKY wobbly: failed 2 of the last 4 runs on unchanged code (quarantined" in forgiven.stdout
    numeric = _harness(repo, tmp_path, "run", "--quarantine", "specs/shaky.yaml")
    assert numeric.returncode == 1, numeric.stdout + numeric.stderr
    assert "FLAKY shaky: failed 2 of the last 4 runs on unchanged code" in numeric.stdout
    assert "quarantined" not in numeric.stdout


def test_runs_append_to_a_postgresql_history(tmp_path: Path, postgres_server_url: str) -> None:
    from tests.postgres_server import fresh_database

    url = fresh_database(postgres_server_url, f"e2e_{os.getpid()}")
    repo = tmp_path / "project"
    make_project(repo)
    for _ in range(2):
        done = _harness(repo, tmp_path, "run", "--history", url)
        assert done.returncode == 0 and "history not recorded" not in done.stdout, done.stdout + done.stderr
    shown = _harness(repo, tmp_path, "history", "--history", url, "--json")
    assert shown.returncode == 0, shown.stderr
    assert [round(p["value"], 9) for p in json.loads(shown.stdout)["specs"]["tiny"]] == [0.3, 0.3]
    assert not (tmp_path / "cache" / "history.sqlite").exists()


def test_bisect_skips_a_commit_whose_spec_does_not_load(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    make_project(repo)
    commits = [git(repo, "rev-parse", "HEAD")]
    spec = repo / "specs" / "tiny.yaml"
    for n in range(2, 7):
        if n == 3:
            spec.write_text(spec.read_text().replace("gpus: 0", "gpus: [broken"))
        if n == 4:
            spec.write_text(SPEC.format(name="tiny"))
        if n == 5:
            (repo / "level.py").write_text("LEVEL = 0.4\n")
        (repo / "notes.txt").write_text(f"note {n}\n")
        git(repo, "add", ".")
        git(repo, "commit", "-qm", f"commit {n}")
        commits.append(git(repo, "rev-parse", "HEAD"))
    done = _harness(repo, tmp_path, "bisect", "tiny", "--good", commits[0], "--bad", commits[5], "--runs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith(f"first bad commit: {commits[4]} commit 5 ("), done.stdout
    tested = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  ")}
    assert "skipped: no loadable spec tiny at this commit" in tested[commits[2][:10]]
    assert "2/2" in done.stdout and "0/2" in done.stdout


def test_a_drift_is_said_in_the_summary_and_fails_the_run_when_asked(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    make_project(repo)
    first = _harness(repo, tmp_path, "run", "--no-history", "--run-dir", str(tmp_path / "first"))
    assert first.returncode == 0, first.stdout + first.stderr
    # The past, as earlier runs of this spec on this machine would have left it: a level of 0.25, then 0.3
    # from commit p12 on (this run's level), imported from run folders like any old run.
    template = json.loads((tmp_path / "first" / "results.json").read_text())
    when = template["git"]["commit_time"] - 1000
    past = []
    for n in range(14):
        loss = 0.3 if n >= 12 else 0.25 + 0.002 * (n % 3)
        folder = tmp_path / "past" / f"p{n:02d}"
        folder.mkdir(parents=True)
        spec = {**template["specs"][0], "final_loss": loss}
        git_facts = {**template["git"], "commit": f"p{n:02d}".ljust(40, "0"), "commit_time": when + n}
        document = {**template, "run_dir": str(folder), "git": git_facts, "specs": [spec]}
        (folder / "results.json").write_text(json.dumps(document))
        past.append(str(folder))
    assert _harness(repo, tmp_path, "history", "import", *past).returncode == 0
    run = _harness(repo, tmp_path, "run", "--fail-on-drift", "--run-dir", str(tmp_path / "now"))
    assert run.returncode == 1, run.stdout + run.stderr
    said = "DRIFT tiny: final_loss +19.0% since p120000, over 3 runs; noise ±0.6% (fails the run: --fail-on-drift)"
    assert said in run.stdout
    found = json.loads((tmp_path / "now" / "results.json").read_text())["history"]["drift"]
    assert [(d["spec"], d["metric"], d["commit"][:3], d["runs"]) for d in found] == [("tiny", "final_loss", "p12", 3)]
    assert "drift tiny: final_loss +19.0%" in (tmp_path / "now" / "report.html").read_text()
