"""harness.trace and harness.planning.selection: the child's trace, watch globs, fingerprints, the cache entries,
--changed-since decisions."""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

from harness.atomic import KeptFileWarning
from harness.cli import main
from harness.context import RunContext
from harness.devices.visible import Inventory
from harness.launch import CHILD_SITE
from harness.planning import selection
from harness.records import SpecResult
from harness.spec.files import spec_from_mapping
from harness.spec.typed_yaml import SpecError
from harness.trace import TRACE_DIR, traced_files, watch_match, watched_files


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "repo"
    (root / "specs").mkdir(parents=True)
    (root / "model.py").write_text("X = 1\n")
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    monkeypatch.setenv("TRAINSPEC_CACHE_DIR", str(tmp_path / "cache"))
    return root


def make_spec(repo: Path, **fields):
    return spec_from_mapping(
        {"id": "s", "command": ["{python}", "train.py"], "gpus": 0, **fields}, repo / "specs" / "s.yaml"
    )


def make_context(repo: Path, tmp_path: Path, **values) -> RunContext:
    return RunContext(repo, tmp_path / "run", Inventory(("0",), "fake", "--fake-gpus 1"), [repo / "specs"], values)


def test_the_child_traces_repository_files_it_imported_or_read_and_nothing_else(tmp_path: Path) -> None:
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    (repo / "pkg").mkdir(parents=True)
    outside.mkdir()
    (repo / "pkg" / "__init__.py").write_text("")
    (repo / "pkg" / "used.py").write_text("")
    (repo / "config.yaml").write_text("a: 1\n")
    (outside / "elsewhere.txt").write_text("x\n")
    code = (
        "import pkg.used, os; open('config.yaml').read(); open(os.path.join(os.pardir, 'outside', "
        "'elsewhere.txt')).read(); open('written.txt', 'w').write('x')"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(CHILD_SITE), str(repo)]),
        "TRAINSPEC_REPO": str(repo),
        "TRAINSPEC_TRACE_DIR": str(tmp_path / "trace"),
    }
    subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, check=True, timeout=60)
    assert traced_files(tmp_path / "trace") == ["config.yaml", "pkg/__init__.py", "pkg/used.py"]


def test_without_the_variables_the_child_traces_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(CHILD_SITE), "TRAINSPEC_TRACE_DIR": str(tmp_path / "trace")}
    subprocess.run([sys.executable, "-c", "open(__import__('os').devnull).read()"], env=env, check=True, timeout=60)
    assert not (tmp_path / "trace").exists()


def test_traces_that_are_garbage_or_name_paths_outside_are_dropped(tmp_path: Path) -> None:
    assert traced_files(tmp_path) is None
    (tmp_path / "trace-a-1.json").write_text("{not json")
    assert traced_files(tmp_path) is None
    (tmp_path / "trace-a-2.json").write_text(
        json.dumps({"files": ["ok.py", "/etc/passwd", "../up.py", "a/../../b", 3]})
    )
    assert traced_files(tmp_path) == ["ok.py"]


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("scripts/*.sh", "scripts/run.sh", True),
        ("scripts/*.sh", "scripts/deep/run.sh", False),
        ("csrc/**", "csrc/a/b.cu", True),
        ("**/*.cu", "k.cu", True),
        ("**/*.cu", "csrc/a/k.cu", True),
        ("data/file?.txt", "data/file1.txt", True),
        ("data/[!x]*.txt", "data/x1.txt", False),
        ("a+b.txt", "a+b.txt", True),
    ],
)
def test_watch_globs_match_changed_paths_as_glob_reads_them(pattern: str, path: str, matches: bool) -> None:
    assert (watch_match(path, [pattern]) == pattern) is matches


def test_watch_globs_find_the_files_in_the_tree(repo: Path) -> None:
    (repo / "csrc" / "deep").mkdir(parents=True)
    (repo / "csrc" / "deep" / "k.cu").write_text("")
    (repo / "csrc" / "top.cu").write_text("")
    assert watched_files(repo, ["csrc/**/*.cu"]) == ["csrc/deep/k.cu", "csrc/top.cu"]


@pytest.mark.parametrize("pattern", ["/etc/*", "../sibling/*", ""])
def test_a_watch_glob_outside_the_repository_is_a_located_error(repo: Path, pattern: str) -> None:
    with pytest.raises(SpecError) as caught:
        make_spec(repo, watch=[pattern])
    assert "watch" in str(caught.value) and "s.yaml" in str(caught.value)


def test_a_watch_that_is_not_a_list_of_strings_is_a_located_error(repo: Path) -> None:
    with pytest.raises(SpecError, match="watch"):
        make_spec(repo, watch="scripts/*.sh")


def test_the_fingerprint_changes_with_versions_devices_files_and_the_spec(repo: Path, tmp_path: Path) -> None:
    spec = make_spec(repo)
    context = make_context(repo, tmp_path)
    hashes = {"model.py": "a", "pyproject.toml": "b"}
    base = selection.fingerprint(spec, repo, hashes, selection.environment_facts(context))
    assert selection.fingerprint(spec, repo, dict(hashes), selection.environment_facts(context)) == base
    context.versions = {
        **context.versions,
        "transformers": "5.0.0" if context.versions.get("transformers") != "5.0.0" else "4.0.0",
    }
    assert selection.fingerprint(spec, repo, hashes, selection.environment_facts(context)) != base
    other_devices = make_context(repo, tmp_path, fake_gpus=2)
    other_devices.inventory = Inventory(("0", "1"), "fake", "--fake-gpus 2")
    assert selection.fingerprint(spec, repo, hashes, selection.environment_facts(other_devices)) != base
    fresh = selection.environment_facts(make_context(repo, tmp_path))
    assert selection.fingerprint(spec, repo, {**hashes, "model.py": "c"}, fresh) != base
    assert selection.fingerprint(replace(spec, timeout=99), repo, hashes, fresh) != base
    # Where the spec was found is not what it says: a neighbour moving its lines changes nothing.
    assert selection.fingerprint(replace(spec, line=40), repo, {**hashes, "specs/s.yaml": "edited"}, fresh) == base


def test_the_harness_version_is_in_the_facts(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = selection.environment_facts(make_context(repo, tmp_path))
    monkeypatch.setattr(selection, "__version__", "99.0")
    assert selection.environment_facts(make_context(repo, tmp_path)) != before


def _passed_run(spec, context: RunContext, tmp_path: Path, outcome: str = "passed") -> None:
    output = tmp_path / "out"
    (output / TRACE_DIR).mkdir(parents=True, exist_ok=True)
    (output / TRACE_DIR / "trace-h-1.json").write_text(json.dumps({"files": ["model.py"]}))
    deps = selection.record_run(spec, context, SpecResult(id=spec.id, outcome=outcome), output)  # type: ignore[arg-type]  # a literal outcome
    assert set(deps) == {"model.py", "pyproject.toml", "specs/s.yaml"}


def test_a_pass_is_reused_until_a_dependency_changes(repo: Path, tmp_path: Path) -> None:
    spec, context = make_spec(repo), make_context(repo, tmp_path)
    _passed_run(spec, context, tmp_path)
    assert selection.reusable(spec, context).startswith(f"unchanged since it passed in {context.run_dir} at ")
    (repo / "model.py").write_text("X = 2\n")
    assert selection.reusable(spec, context) is None


def test_a_pass_expires_after_the_setting_s_days(repo: Path, tmp_path: Path) -> None:
    spec, context = make_spec(repo), make_context(repo, tmp_path, unchanged_days=3)
    _passed_run(spec, context, tmp_path)
    entry = tmp_path / "cache" / "selection" / "s.json"
    data = json.loads(entry.read_text())
    (passed,) = data["passes"].values()
    passed["at"] = (_dt.datetime.now(_dt.UTC) - _dt.timedelta(days=2)).isoformat()
    entry.write_text(json.dumps(data))
    assert selection.reusable(spec, context) is not None
    passed["at"] = (_dt.datetime.now(_dt.UTC) - _dt.timedelta(days=4)).isoformat()
    entry.write_text(json.dumps(data))
    assert selection.reusable(spec, context) is None


def test_a_failure_clears_the_pass(repo: Path, tmp_path: Path) -> None:
    spec, context = make_spec(repo), make_context(repo, tmp_path)
    _passed_run(spec, context, tmp_path)
    _passed_run(spec, context, tmp_path, outcome="failed")
    assert selection.reusable(spec, context) is None


def test_an_entry_of_another_shape_is_ignored_with_one_warning(repo: Path, tmp_path: Path) -> None:
    spec, context = make_spec(repo), make_context(repo, tmp_path)
    folder = tmp_path / "cache" / "selection"
    folder.mkdir(parents=True)
    for shape in (
        {"dependencies": ["x"]},
        {"dependencies": {}, "passes": {"f": {"at": 3}}},
        {"traced": True, "dependencies": {}, "run": "r", "at": "t", "extra": 1},
    ):
        (folder / "s.json").write_text(json.dumps({"format": "trainspec-selection/1", **shape}))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert selection.reusable(spec, context) is None
    (folder / "s.json").write_text("[1, 2]")
    with pytest.warns(KeptFileWarning, match="selection cache entry of s is unreadable"):
        assert selection.reusable(spec, context) is None


def test_decisions_name_the_changed_file_that_decided(repo: Path, tmp_path: Path) -> None:
    spec = make_spec(repo, watch=["scripts/*.sh"])
    entry = selection.Entry(True, {"model.py": "a", "data/x.txt": "b"}, "run", "now")
    assert selection.decide(spec, repo, {"pyproject.toml"}, entry).why.startswith("pyproject.toml changed")
    assert selection.decide(spec, repo, {"specs/s.yaml"}, entry).why == "specs/s.yaml changed (its spec file)"
    assert selection.decide(spec, repo, {"scripts/go.sh"}, entry).why == "scripts/go.sh changed (watch scripts/*.sh)"
    assert selection.decide(spec, repo, {"model.py", "data/x.txt"}, entry) == selection.Decision(
        True, "data/x.txt changed (and 1 more of its dependencies)"
    )
    assert selection.decide(spec, repo, {"README.md"}, entry) == selection.Decision(
        False, "none of its 2 dependencies changed"
    )
    assert selection.decide(spec, repo, {"README.md"}, None).run
    untraced = selection.Entry(False, {}, "run", "now")
    assert selection.decide(make_spec(repo), repo, {"README.md"}, untraced).run
    assert not selection.decide(spec, repo, {"README.md"}, untraced).run


def test_changed_since_outside_git_is_bad_usage(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(repo)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(repo.parent))
    (repo / "specs" / "s.yaml").write_text('id: s\ncommand: ["{python}", "train.py"]\ngpus: 0\n')
    assert main(["plan", "--changed-since", "HEAD"]) == 2
    assert capsys.readouterr().err.startswith("error: --changed-since: git knows no commit 'HEAD'")
    assert main(["plan", "--changed-since=--all"]) == 2


def test_unchanged_days_below_one_is_bad_usage(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(repo)
    assert main(["run", "--fake-gpus", "1", "--unchanged-days", "0", "--run-dir", "rd"]) == 2
    assert "--unchanged-days must be 1 or more" in capsys.readouterr().err


def test_unchanged_days_in_the_settings_is_checked(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(repo)
    (repo / "pyproject.toml").write_text("[tool.trainspec]\nunchanged_days = 'soon'\nskip_unchanged = 'yes'\n")
    assert main(["list"]) == 2
    assert "pyproject.toml" in capsys.readouterr().err


def test_another_transformers_version_reruns_every_spec(repo: Path, tmp_path: Path) -> None:
    specs = [make_spec(repo), replace(make_spec(repo), id="t")]
    context = make_context(repo, tmp_path)
    for spec in specs:
        _passed_run(spec, context, tmp_path)
    assert all(selection.reusable(spec, context) for spec in specs)
    matrix_pin = make_context(repo, tmp_path)
    matrix_pin.versions = {**matrix_pin.versions, "transformers": "0.0.1-other-pin"}
    assert [selection.reusable(spec, matrix_pin) for spec in specs] == [None, None]


def test_the_passes_of_each_matrix_pin_are_kept_side_by_side(repo: Path, tmp_path: Path) -> None:
    spec = make_spec(repo)
    first, other_pin = make_context(repo, tmp_path), make_context(repo, tmp_path)
    other_pin.versions = {**other_pin.versions, "transformers": "0.0.1-other-pin"}
    _passed_run(spec, first, tmp_path)
    _passed_run(spec, other_pin, tmp_path)
    assert selection.reusable(spec, first) and selection.reusable(spec, other_pin)
    _passed_run(spec, other_pin, tmp_path, outcome="failed")
    assert selection.reusable(spec, first) and selection.reusable(spec, other_pin) is None
