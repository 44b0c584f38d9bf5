"""harness.repo_writes: the proof that a run did not write into the repository, git-based before and after."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import repo_writes as tree
from harness.repo_writes import repo_writes_since, run_dir_problem, snapshot


def git_repo(folder: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    (folder / "tracked.txt").write_text("v1\n")
    (folder / ".gitignore").write_text("ignored/\n")
    subprocess.run(["git", "add", "."], cwd=folder, check=True)
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "init"], cwd=folder, check=True
    )
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
    assert repo_writes_since(before, after, repo, [repo / "runs"]) == ["new.txt", "tracked.txt"]


def test_outside_git_there_is_no_snapshot(tmp_path):
    assert snapshot(tmp_path) is None


def test_a_run_that_writes_into_the_repository_fails_and_names_the_file(tmp_path):
    repo = git_repo(tmp_path / "repo")
    (repo / "specs").mkdir()
    (repo / "specs" / "w.yaml").write_text(
        "id: writes_here\ncommand: ['{python}', '-c', \"open('oops.txt', 'w').write('x')\"]\ngpus: "
        "0\nmin_steps_logged: 0\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--run-dir", str(tmp_path / "run")],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "the run wrote into the repository: oops.txt" in run.stdout
    assert json.loads((tmp_path / "run" / "results.json").read_text())["repo_writes"] == ["oops.txt"]
    (repo / "oops.txt").unlink()
    allowed = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--run-dir", str(tmp_path / "run2"), "--allow-repo-writes"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def commit_all(repo: Path) -> None:
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "more"], cwd=repo, check=True
    )


def test_a_run_dir_two_levels_inside_an_untracked_folder_is_not_a_write(tmp_path):
    repo = git_repo(tmp_path / "repo")
    run_dir = repo / "out" / "runs" / "r1"
    run_dir.mkdir(parents=True)
    before = snapshot(repo)
    (run_dir / "specs").mkdir()
    (run_dir / "specs" / "result.json").write_text("{}")
    (run_dir / "results.json").write_text("{}")
    after = snapshot(repo)
    assert repo_writes_since(before, after, repo, [run_dir]) == []
    (repo / "out" / "stray.txt").write_text("x")
    assert repo_writes_since(before, snapshot(repo), repo, [run_dir]) == ["out/stray.txt"]


def test_a_run_dir_created_after_the_first_snapshot_is_not_a_write_either(tmp_path):
    repo = git_repo(tmp_path / "repo")
    before = snapshot(repo)
    run_dir = repo / "out" / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text("{}")
    assert repo_writes_since(before, snapshot(repo), repo, [run_dir]) == []


def test_writes_inside_an_untracked_folder_that_already_existed_are_seen(tmp_path):
    repo = git_repo(tmp_path / "repo")
    (repo / ".gitignore").write_text("ignored/\n*.pyc\n")
    commit_all(repo)
    (repo / "data" / "sub").mkdir(parents=True)
    (repo / "data" / "sub" / "old.txt").write_text("kept")
    (repo / "data" / "sub" / "grows.txt").write_text("1")
    (repo / "data" / "sub" / "goes.txt").write_text("1")
    before = snapshot(repo)
    assert "data/" in before and "data/sub/old.txt" in before
    (repo / "data" / "sub" / "new.txt").write_text("x")
    (repo / "data" / "sub" / "grows.txt").write_text("12")
    (repo / "data" / "sub" / "goes.txt").unlink()
    (repo / "data" / "sub" / "cache.pyc").write_text("ignored by a pattern")
    assert repo_writes_since(before, snapshot(repo), repo, []) == [
        "data/sub/goes.txt",
        "data/sub/grows.txt",
        "data/sub/new.txt",
    ]


def test_a_new_folder_is_named_once(tmp_path):
    repo = git_repo(tmp_path / "repo")
    before = snapshot(repo)
    (repo / "checkpoints" / "step-1").mkdir(parents=True)
    for name in ("model.bin", "optimizer.bin"):
        (repo / "checkpoints" / "step-1" / name).write_text("x")
    assert repo_writes_since(before, snapshot(repo), repo, []) == ["checkpoints/"]


def test_files_past_the_bound_are_unseen_but_never_reported_as_gone(tmp_path, monkeypatch):
    monkeypatch.setattr(tree, "MAX_FOLDER_FILES", 3)
    repo = git_repo(tmp_path / "repo")
    (repo / "data").mkdir()
    for name in "bcde":
        (repo / "data" / name).write_text("x")
    before = snapshot(repo)
    assert sorted(p for p in before if not p.startswith(".git/")) == ["data/", "data/b", "data/c", "data/d"]
    (repo / "data" / "a").write_text("new, first in order: pushes data/d past the bound")
    (repo / "data" / "z").write_text("past the bound: unseen")
    assert repo_writes_since(before, snapshot(repo), repo, []) == ["data/a"]


def test_skipped_folders_are_not_listed(tmp_path):
    repo = git_repo(tmp_path / "repo")
    run_dir = repo / "out" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "a.txt").write_text("x")
    (repo / "out" / "b.txt").write_text("x")
    assert sorted(p for p in snapshot(repo, skip=[run_dir]) if not p.startswith(".git/")) == ["out/", "out/b.txt"]


def test_gits_hooks_config_and_info_are_in_the_snapshot(tmp_path):
    """What a run could plant in git's folder for the user's next git command to run is compared too."""
    repo = git_repo(tmp_path / "repo")
    assert ".git/config" in snapshot(repo)
    before = snapshot(repo)
    (repo / ".git" / "hooks" / "post-checkout").write_text("#!/bin/sh\necho owned\n")
    with open(repo / ".git" / "config", "a") as config:
        config.write("[alias]\n\tst = status\n")
    assert repo_writes_since(before, snapshot(repo), repo, []) == [".git/config", ".git/hooks/post-checkout"]


def test_run_dir_problem(tmp_path):
    repo = git_repo(tmp_path / "repo")
    (tmp_path / "link").symlink_to(repo)
    assert run_dir_problem(repo, repo).startswith(f"the run directory {repo} is the repository itself ({repo})")
    assert "is the repository itself" in run_dir_problem(tmp_path / "link", repo)
    assert "is the repository itself" in run_dir_problem(repo / "sub" / "..", repo)
    assert run_dir_problem(tmp_path, repo).startswith(f"the run directory {tmp_path} contains the repository ({repo})")
    assert run_dir_problem(Path("/"), repo) is not None
    for fine in (repo / "out" / "runs" / "r1", tmp_path / "elsewhere", tmp_path / "link" / "out"):
        assert run_dir_problem(fine, repo) is None
