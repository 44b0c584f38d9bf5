"""pytest's own flags work through `python -m harness run` (and so after `nox -s TIER --`)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SPECS = {
    "good": "id: good\ncommand: ['{python}', '-c', 'pass']\ngpus: 0\nmin_steps_logged: 0\nmarkers: [smoke]\n",
    "bad": "id: bad\ncommand: ['{python}', '-c', 'raise SystemExit(3)']\ngpus: 0\nmin_steps_logged: 0\n",
    "other": "id: other\ncommand: ['{python}', '-c', 'pass']\ngpus: 0\nmin_steps_logged: 0\n",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    (folder / "specs").mkdir(parents=True)
    for name, text in SPECS.items():
        (folder / "specs" / f"{name}.yaml").write_text(text)
    return folder


def ran(run) -> list[str]:
    return sorted(s["id"] for s in run.results["specs"])


def test_last_failed_runs_only_the_spec_that_failed(harness, project: Path) -> None:
    first = harness("run", cwd=project)
    assert first.code == 1, first.output
    assert ran(first) == ["bad", "good", "other"]
    again = harness("run", "--lf", cwd=project)
    assert again.code == 1, again.output
    assert ran(again) == ["bad"]
    assert "run-last-failure: rerun previous 1 failure" in again.output
    # --ff runs it first, then the rest
    ordered = harness("run", "--ff", cwd=project)
    assert ran(ordered) == ["bad", "good", "other"]
    # pytest's cache stays outside the repository
    assert not (project / ".pytest_cache").exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["-k", "good or other"], ["good", "other"]),
        (["-k", "not bad"], ["good", "other"]),
        (["-m", "smoke"], ["good"]),
        (["-x"], ["bad"]),
        (["--maxfail", "1"], ["bad"]),
    ],
    ids=["-k or", "-k not", "-m", "-x", "--maxfail"],
)
def test_pytests_selection_and_stop_flags_pass_through(
    harness, project: Path, flags: list[str], expected: list[str]
) -> None:
    """-x and --maxfail stop at the first failure: `bad` is planned first (equal timeouts go by id)."""
    run = harness("run", *flags, cwd=project)
    assert run.code == (1 if "bad" in expected else 0), run.output
    assert ran(run) == expected


def test_a_skipped_multi_device_spec_points_at_its_file_and_line_and_the_real_inventory(harness, project: Path) -> None:
    (project / "specs" / "wide.yaml").write_text(
        "# needs two devices\n\nid: wide\ncommand: ['{python}', '-c', 'pass']\ngpus: 2\ncpu_ok: "
        "true\nmin_steps_logged: 0\n"
    )
    run = harness("run", "-k", "wide or good", cwd=project, env={"CUDA_VISIBLE_DEVICES": ""})
    assert run.code == 0, run.output
    skip_lines = [line for line in run.output.splitlines() if line.startswith("SKIPPED")]
    assert len(skip_lines) == 1, run.output
    assert skip_lines[0].startswith(
        f"SKIPPED [1] {Path('specs') / 'wide.yaml'}:3: needs 2 devices, this run has no GPU (CUDA_VISIBLE_DEVICES="
    ), skip_lines
    assert (
        "try --fake-gpus 2" in skip_lines[0]
        and "this run has 1" not in skip_lines[0]
        and "harness" not in skip_lines[0]
    )
    assert run.spec("wide")["outcome"] == "skipped"
