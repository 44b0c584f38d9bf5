"""docs/ci.md: every recipe parses, caches the harness's cache directory, reports junit.xml
from its run directory, and every nox and `python -m harness` command in it uses only
sessions and options that exist (checked against the real `--help` of each)."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import nox
import pytest
import yaml

from harness.project.nox_sessions import define_sessions

CI_DOC = Path(__file__).resolve().parents[2] / "docs" / "ci.md"
FENCED = re.compile(r"^```(yaml|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SCRIPT_KEYS = ("run", "script", "before_script", "after_script")
SHELL_OPERATORS = {">", ">>", "|", "&&", "||", ";"}


def recipes() -> list[tuple[str, str]]:
    return FENCED.findall(CI_DOC.read_text(encoding="utf-8"))


def yaml_recipes() -> list[dict]:
    return [yaml.safe_load(text) for kind, text in recipes() if kind == "yaml"]


def shell_of(value: object) -> list[str]:
    """The shell text under every `run:` (GitHub) and `script:` / `before_script:` / `after_script:` (GitLab)."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in SCRIPT_KEYS:
                found += [item] if isinstance(item, str) else list(item)
            else:
                found += shell_of(item)
    elif isinstance(value, list):
        for item in value:
            found += shell_of(item)
    return found


def commands() -> list[list[str]]:
    """Every nox and `python -m harness` command line in the recipes, as argv."""
    shell = [
        line for kind, text in recipes() for line in (shell_of(yaml.safe_load(text)) if kind == "yaml" else [text])
    ]
    found = []
    for line in "\n".join(shell).replace("\\\n", " ").splitlines():
        segment: list[str] = []
        for token in [*shlex.split(line, comments=True), ";"]:
            if token not in SHELL_OPERATORS:
                segment.append(token)
                continue
            if segment[:1] == ["nox"] or segment[:3] == ["python", "-m", "harness"]:
                found.append(segment)
            segment = []
    return found


@functools.cache
def help_text(*command: str) -> str:
    result = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(command)} --help: {result.stderr}"
    return result.stdout


def unknown_options(args: list[str], help: str) -> list[str]:
    """Options in `args` that `help` does not list (`--opt=value` counts as `--opt`)."""
    listed = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", help))
    return [arg for arg in args if arg.startswith("-") and arg.split("=", 1)[0] not in listed]


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], set[str]]:
    """The session names and tags define_sessions registers for a project with a matrix and tests."""
    root = tmp_path_factory.mktemp("project")
    (root / "pyproject.toml").write_text('[tool.trainspec]\nmatrix = [{ torch = "2.13.0" }]\ntests = ["tests"]\n')
    with pytest.MonkeyPatch.context() as patch:
        registry: dict = {}
        patch.setattr(nox.registry, "_REGISTRY", registry)
        define_sessions(root)
        return set(registry), {tag for func in registry.values() for tag in func.tags}


def test_the_doc_has_each_recipe_the_issue_asks_for():
    documents = yaml_recipes()
    github = [d for d in documents if "jobs" in d]
    gitlab = [d for d in documents if "stages" in d]
    assert len(github) == 2 and len(gitlab) == 2 and any(kind == "bash" for kind, _ in recipes())
    assert any(d.get(True, d.get("on", {})).get("schedule") for d in github)  # PyYAML reads the key `on` as True
    argvs = commands()
    assert any(argv[:1] == ["nox"] and "--backend" in argv and "slurm" in argv for argv in argvs)
    assert any(argv[:3] == ["nox", "-t", "matrix"] for argv in argvs)
    assert any(argv[:4] == ["python", "-m", "harness", "report"] for argv in argvs)


def test_github_workflows_cache_the_harness_cache_and_report_the_run():
    for workflow in (d for d in yaml_recipes() if "jobs" in d):
        for job in workflow["jobs"].values():
            assert job["runs-on"] and job["steps"]
            steps = job["steps"]
            assert all(("run" in step) != ("uses" in step) for step in steps)
            assert all(re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]) for step in steps if "uses" in step)
            uses = {step["uses"].split("@")[0]: step.get("with", {}) for step in steps if "uses" in step}
            assert "TRAINSPEC_CACHE_DIR=" in "".join(shell_of(steps))
            assert uses["actions/cache"]["path"] == "${{ env.TRAINSPEC_CACHE_DIR }}"
            assert "${{ env.RUN_DIR }}/junit.xml" in uses["mikepenz/action-junit-report"]["report_paths"]
            assert "${{ env.RUN_DIR }}" in uses["actions/upload-artifact"]["path"]
            assert any('--run-dir "$RUN_DIR"' in line for line in shell_of(steps))
            assert any('>> "$GITHUB_STEP_SUMMARY"' in line for line in shell_of(steps))


def test_gitlab_jobs_keep_the_run_dir_and_its_junit_report():
    for config in (d for d in yaml_recipes() if "stages" in d):
        jobs = {name: job for name, job in config.items() if isinstance(job, dict) and "script" in job}
        assert jobs
        for job in jobs.values():
            assert job["stage"] in config["stages"]
            run_dir = {**config.get("variables", {}), **job.get("variables", {})}["RUN_DIR"]
            assert run_dir.startswith("$CI_PROJECT_DIR/")
            relative = run_dir.removeprefix("$CI_PROJECT_DIR/")
            assert (
                job["artifacts"]["reports"]["junit"] == f"{relative}/junit.xml"
                and f"{relative}/" in job["artifacts"]["paths"]
            )
            assert job["artifacts"]["when"] == "always"
            assert any('--run-dir "$RUN_DIR"' in line for line in shell_of(job))


def test_every_nox_command_names_real_sessions_and_options(sessions):
    names, tags = sessions
    for argv in (argv for argv in commands() if argv[0] == "nox"):
        nox_args, _, harness_args = argv[1:], None, []
        if "--" in nox_args:
            at = nox_args.index("--")
            nox_args, harness_args = nox_args[:at], nox_args[at + 1 :]
        assert unknown_options(nox_args, help_text("-m", "nox")) == [], argv
        for flag, known in (("-s", names), ("-t", tags)):
            if flag in nox_args:
                assert nox_args[nox_args.index(flag) + 1] in known, argv
        assert unknown_options(harness_args, help_text("-m", "harness", "run")) == [], argv


def test_every_harness_command_uses_real_options():
    harness_commands = [argv for argv in commands() if argv[0] == "python"]
    assert harness_commands
    for argv in harness_commands:
        subcommand = argv[3]
        assert unknown_options(argv[4:], help_text("-m", "harness", subcommand)) == [], argv


def test_a_misspelled_option_is_caught():
    assert unknown_options(
        ["--gpus", "1", "--run-dri", "x", "--slurm-arg=--account=ml"], help_text("-m", "harness", "run")
    ) == ["--run-dri"]
