"""The repository-unchanged proof: git-based before/after comparison and its verdict on a run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.tree import snapshot, written


def git_repo(folder: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    (folder / "tracked.txt").write_text("v1\n")
    (folder / ".gitignore").write_text("ignored/\n")
    subprocess.run(["git", "add", "."], cwd=folder, check=True)
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "init"], cwd=folder, check=True)
    return folder


def test_new_and_changed_paths_are_named_and_ignored_or_allowed_ones_are_not(tmp_path):
    repo = git_repo(tmp_path / "repo")
    (repo / "already-dirty.txt").write_text("before the run\n")
    before = snapshot(repo)
    (repo / "tracked.txt").write_text("v2, longer\n")
    (repo / "new.txt").write_text("x")
    (repo / "ignored").mkdir()
    (repo / "ignored" / "cache.bin").write_text("x")
    (repo / "runs").mkdir()
    (repo / "runs" / "results.json").write_text("{}")
    after = snapshot(repo)
    assert written(before, after, repo, [repo / "runs"]) == ["new.txt", "tracked.txt"]


def test_outside_git_there_is_no_snapshot(tmp_path):
    assert snapshot(tmp_path) is None


def test_a_run_that_writes_into_the_repository_fails_and_names_the_file(tmp_path):
    repo = git_repo(tmp_path / "repo")
    (repo / "specs").mkdir()
    (repo / "specs" / "w.yaml").write_text("id: writes_here\ncommand: ['{python}', '-c', \"open('oops.txt', 'w').write('x')\"]\ngpus: 0\nmin_steps_logged: 0\n")
    run = subprocess.run([sys.executable, "-m", "harness", "run", "--run-dir", str(tmp_path / "run")], cwd=repo, capture_output=True, text=True)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "the run wrote into the repository: oops.txt" in run.stdout
    assert json.loads((tmp_path / "run" / "results.json").read_text())["repo_writes"] == ["oops.txt"]
    (repo / "oops.txt").unlink()
    allowed = subprocess.run([sys.executable, "-m", "harness", "run", "--run-dir", str(tmp_path / "run2"), "--allow-repo-writes"], cwd=repo, capture_output=True, text=True)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
