"""harness.cli: list, plan, validate and the argument rules of every subcommand, run in-process."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main, pytest_arguments, written_since
from harness.commands import build_parser
from harness.spec.files import registered_markers

from ..conftest import fresh_python

PYPROJECT = """\
[tool.pytest.ini_options]
markers = [
    "cuda: needs a real CUDA device",
    "nightly(reason): only at night",
]
"""


@pytest.fixture
def project(write, tmp_path, monkeypatch, private_cache):
    """A small project: pyproject.toml registering markers, and a specs/ folder."""
    write("pyproject.toml", PYPROJECT)
    write("specs/smoke.yaml", "id: tiny_smoke\ncommand: [x]\nmarkers: [smoke]\ncpu_ok: true\ntimeout: 60\n")
    write("specs/train.yaml", "id: train\ncommand: [x]\ncpu_ok: true\ntimeout: 120\n")
    write(
        "specs/multi/wide.yaml",
        "id: wide\ncommand: [x]\ngpus: 2\ncpu_ok: true\ntier: full\nmarkers: [nightly]\ntimeout: 200\n",
    )
    write("specs/multi/gpu.yaml", "id: gpu_only\ncommand: [x]\nmarkers: [cuda]\n")
    write("specs/multi/huge.yaml", "id: huge\ncommand: [x]\ngpus: 4\ncpu_ok: true\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_list_prints_one_row_per_spec(project, capsys):
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert columns(lines[0]) == ["id", "tier", "devices", "markers", "file"]
    rows = [columns(line) for line in lines[1:]]
    assert rows == [
        ["tiny_smoke", "smoke", "1 (cpu_ok)", "smoke,integration", "specs/smoke.yaml"],
        ["gpu_only", "standard", "1", "integration,cuda", "specs/multi/gpu.yaml"],
        ["huge", "standard", "4 (cpu_ok)", "integration", "specs/multi/huge.yaml"],
        ["train", "standard", "1 (cpu_ok)", "integration", "specs/train.yaml"],
        ["wide", "full", "2 (cpu_ok)", "integration,slow,nightly", "specs/multi/wide.yaml"],
    ]
    # columns are aligned: every row starts its second column at the same offset
    assert (
        len({line.index(row[1], len(row[0])) for line, row in zip(lines, [columns(lines[0]), *rows], strict=False)})
        == 1
    )


def test_list_shows_the_nodes_of_a_spec_across_nodes(project, write, capsys):
    write("across/a.yaml", "id: across\ncommand: [t.py]\nlauncher: torchrun\ngpus: 8\nnodes: 4\n")
    assert main(["list", "--specs", "across"]) == 0
    assert columns(capsys.readouterr().out.splitlines()[1])[:3] == ["across", "standard", "8 x 4 nodes"]


def test_list_with_an_explicit_specs_path(project, capsys):
    assert main(["list", "--specs", "specs/multi/wide.yaml", "--specs", "specs/train.yaml"]) == 0
    ids = [columns(line)[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert ids == ["train", "wide"]


def test_list_refuses_an_unregistered_marker(project, write, capsys):
    write("specs/bad.yaml", "id: bad\ncommand: [x]\nmarkers: [weekly]\n")
    assert main(["list"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: specs/bad.yaml:3: markers: 'weekly' is not a registered marker")


def test_plan_with_fake_gpus(project, private_cache, capsys):
    private_cache.mkdir()
    (private_cache / "durations.json").write_text(json.dumps({"train": 30.0, "tiny_smoke": 5.0}))
    assert main(["plan", "--fake-gpus", "2"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "devices: 2 fake devices [0, 1] from --fake-gpus 2"
    table_start = lines.index(next(line for line in lines if line.startswith("order")))
    assert columns(lines[table_start]) == ["order", "id", "devices", "memory", "expected", "from", "simulated"]
    rows = [columns(line) for line in lines[table_start + 1 : table_start + 4]]
    assert rows == [
        ["1", "wide", "2", "whole", "200.0s", "timeout", "0,1 at 0.0s"],
        ["2", "train", "1", "whole", "30.0s", "recorded", "0 at 200.0s"],
        ["3", "tiny_smoke", "1", "whole", "5.0s", "recorded", "1 at 200.0s"],
    ]
    skipped = lines[lines.index("skipped:") + 1 :]
    assert "  gpu_only: needs 1 GPU and is not cpu_ok (fake devices)" in skipped
    assert any(line.startswith("  huge: needs 4 devices, this run has 2") for line in skipped)
    # wide holds both devices whole, so nothing runs beside it: 200, then the longest of the rest, 30.
    assert "3 to run on 2 workers" in out
    assert "expected makespan 230.0s; lower bound 230.0s" in out


def test_plan_of_a_tier(project, capsys):
    assert main(["plan", "--fake-gpus", "1", "--tier", "smoke"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^1\s+tiny_smoke\s+1\s+whole\s+60\.0s\s+timeout\s+0 at 0\.0s$", out, re.M)
    assert "wide" not in out and "skipped:" not in out
    assert "1 to run on 1 worker," in out or "1 to run on 1 worker;" in out


def test_plan_with_more_gpus_than_the_caller_allows(project, monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert main(["plan", "--gpus", "3"]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip()
        == "error: --gpus 3 needs 3 visible devices, found 1: 1 GPU [0] from CUDA_VISIBLE_DEVICES; --fake-gpus "
        "3 simulates devices without a GPU"
    )


def test_validate_defaults_to_the_specs_folder(project, capsys):
    assert main(["validate"]) == 0
    assert capsys.readouterr().out.strip() == "5 specs valid in 5 files"


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(action.choices)


def test_the_expected_subcommands_exist():
    assert {"list", "validate", "plan", "run"} <= set(subcommands())


@pytest.mark.parametrize("argv", [["--help"], *[[name, "--help"] for name in subcommands()]])
def test_help_of_every_subcommand_exits_0(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m harness")


@pytest.mark.parametrize("command", ["run", "plan"])
def test_gpus_and_fake_gpus_are_mutually_exclusive(command, capsys):
    with pytest.raises(SystemExit) as caught:
        main([command, "--gpus", "1", "--fake-gpus", "1"])
    assert caught.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_no_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2


def test_unknown_arguments_are_refused_except_by_run(project, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["list", "-k", "tiny"])
    assert caught.value.code == 2
    assert "unrecognized arguments: -k tiny" in capsys.readouterr().err


def test_run_refuses_negative_workers_before_running_anything(project, capsys):
    assert main(["run", "--fake-gpus", "1", "--workers", "-1", "--run-dir", "rd"]) == 2
    assert "--workers must be 0 or more" in capsys.readouterr().err
    assert not (project / "rd").exists()


def test_run_refuses_bad_specs_before_running_anything(project, write, capsys):
    write("specs/broken.yaml", "id: broken\ncommand: [x]\ntimeout: soon\n")
    assert main(["run", "--fake-gpus", "1", "--run-dir", "rd"]) == 2
    assert capsys.readouterr().err.startswith("error: specs/broken.yaml:3: timeout: expected a number")
    assert not (project / "rd").exists()


def test_pytest_arguments_shard_over_the_devices(tmp_path):
    args, extra = build_parser().parse_known_args(
        ["run", "--fake-gpus", "2", "--tier", "smoke", "--specs", "s", "-k", "tiny"]
    )
    argv = pytest_arguments(args, 2, tmp_path, extra, [Path("s")])
    assert argv[0] == "s"
    assert argv[argv.index("-n") + 1] == "2"
    assert argv[argv.index("--tier") + 1] == "smoke"
    assert argv[argv.index("--fake-gpus") + 1] == "2"
    assert argv[argv.index("--run-dir") + 1] == str(tmp_path)
    assert argv[-2:] == ["-k", "tiny"]
    args, extra = build_parser().parse_known_args(["run", "--fake-gpus", "1"])
    single = pytest_arguments(args, 0, tmp_path, extra, [Path("specs")])
    assert "-n" not in single and "no:xdist" in single


def test_registered_markers(tmp_path):
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    assert registered_markers(tmp_path) == ["cuda", "nightly"]
    assert registered_markers(tmp_path / "missing") == []
    (tmp_path / "pyproject.toml").write_text("not = [toml")
    assert registered_markers(tmp_path) == []


def test_the_harness_core_never_imports_torch():
    code = (
        "import sys\n"
        "import harness.cli, harness.plugin, harness.runner.pipeline, harness.planning.plan, "
        "harness.process, harness.backends, harness.devices.leases, harness.checks.after_run, "
        "harness.records\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    proc = fresh_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_spec_file_named_on_the_command_line_runs_alone(project):
    """`run path/to/spec.yaml` validates and collects that file only, wherever it lives."""
    elsewhere = project.parent / f"{project.name}-elsewhere.yaml"
    elsewhere.write_text("id: elsewhere\ncommand: ['true']\ngpus: 0\nmin_steps_logged: 0\n")
    (project / "specs" / "broken.yaml").write_text("id: broken\ntimeout: soon\n")
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(elsewhere), "--run-dir", "rd"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((project / "rd" / "results.json").read_text())
    assert [s["id"] for s in results["specs"]] == ["elsewhere"]


def test_report_compares_runs_and_names_a_bad_input(tmp_path, capsys):
    from harness.records import SpecResult, write_results

    for name, loss in (("a", 1.0), ("b", 1.5)):
        (tmp_path / name).mkdir()
        write_results(
            tmp_path / name,
            [SpecResult(id="tiny", outcome="passed", final_loss=loss, duration=2.0)],
            {"versions": {"torch": "2.13.0", "transformers": name}},
        )
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--html", str(tmp_path / "cmp.html")]) == 0
    page = (tmp_path / "cmp.html").read_text()
    assert page.startswith("<!doctype html>") and 'id="spec-tiny"' in page
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b" / "results.json")]) == 0
    markdown = capsys.readouterr().out
    assert "| `tiny` |" in markdown and "+0.5" in markdown
    (tmp_path / "junk.json").write_text("{}")
    assert main(["report", str(tmp_path / "junk.json")]) == 2
    assert f"{tmp_path / 'junk.json'}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("before", "printed"), [(None, False), ("earlier run", False)], ids=["no results.json", "an earlier run's"]
)
def test_the_results_path_is_printed_only_when_the_run_wrote_it(project, before, printed):
    """A flag pytest refuses ends the run before any results: no path to a file that is not this run's."""
    run_dir = project / "rd"
    if before:
        run_dir.mkdir()
        (run_dir / "results.json").write_text("{}")
        os.utime(run_dir / "results.json", (1_000_000_000, 1_000_000_000))
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--no-such-flag", "--run-dir", str(run_dir)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "unrecognized arguments: --no-such-flag" in proc.stderr
    assert ("results in" in proc.stdout) is printed


def test_written_since(tmp_path):
    path = tmp_path / "results.json"
    assert not written_since(path, time.time())
    path.write_text("{}")
    assert written_since(path, time.time() - 5)
    os.utime(path, (1_000_000_000, 1_000_000_000))
    assert not written_since(path, time.time() - 5)


@pytest.mark.parametrize(
    "flags",
    [
        ["--lf"],
        ["--ff"],
        ["-x"],
        ["--maxfail", "2"],
        ["--maxfail=2"],
        ["-k", "a and not b"],
        ["-m", "smoke or nightly"],
        ["--lf", "-x", "-k", "train"],
    ],
)
def test_pytests_own_flags_reach_pytest_with_its_cache_outside_the_repository(tmp_path, monkeypatch, flags):
    monkeypatch.setenv("TRAINSPEC_CACHE_DIR", str(tmp_path / "cache"))
    args, extra = build_parser().parse_known_args(["run", *flags])
    assert extra == flags
    argv = pytest_arguments(args, 0, tmp_path / "rd", extra, [Path("specs")])
    assert argv[-len(flags) :] == flags
    assert "no:cacheprovider" not in argv
    assert f"cache_dir={tmp_path / 'cache' / 'pytest'}" in argv
