"""`harness history`, `history import`, `report --history` and bad input to them, in process on real stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.history.hook import after_run
from harness.history.queries import sparkline
from harness.records import SpecResult, write_results


def _run(folder: Path, losses: dict[str, float], outcome: str = "passed") -> Path:
    records = [
        SpecResult(id=spec, outcome=outcome, final_loss=loss, duration=3.0, loss_curve=[[1.0, 2.0], [2.0, loss]])
        for spec, loss in losses.items()  # type: ignore[arg-type]
    ]
    folder.mkdir(parents=True)
    return write_results(folder, records, {"backend": "local", "devices": {"kind": "cpu"}, "versions": {}})


@pytest.fixture
def filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three runs of two specs in a SQLite history; the working directory a project without settings."""
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "history.sqlite"
    for n, loss in enumerate((1.0, 1.1, 0.99)):
        history = after_run(_run(tmp_path / f"run{n}", {"a": loss, "b": 2.0}), {"history": str(store)}, tmp_path)
        assert history.warning is None
    return store


def test_history_shows_each_spec_commit_by_commit(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "a", "--history", str(filled)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "a  final_loss  ▁█▁  (3 runs)"
    assert out[1].split() == ["commit", "when", "outcome", "final_loss", "change"]
    assert out[3].split()[-2:] == ["1.1", "+10.0%"] and out[4].split()[-2:] == ["0.99", "-10.0%"]


def test_history_as_json_with_last(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--history", str(filled), "--last", "2", "--metric", "duration", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["metric"] == "duration" and set(data["specs"]) == {"a", "b"}
    assert [p["value"] for p in data["specs"]["a"]] == [3.0, 3.0]


def test_history_import_loads_old_run_folders_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = [_run(tmp_path / f"old{n}", {"a": 1.0 + n}).parent for n in range(2)]
    store = tmp_path / "imported.sqlite"
    assert main(["history", "import", *map(str, runs), "--history", str(store)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"2 of 2 runs added to sqlite:///{store}"
    assert main(["history", "import", str(runs[0]), "--history", str(store)]) == 0
    assert "already in the history" in capsys.readouterr().out
    assert main(["history", "a", "--history", str(store), "--json"]) == 0
    assert [p["value"] for p in json.loads(capsys.readouterr().out)["specs"]["a"]] == [1.0, 2.0]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["history", "nope"], "error: not in the history: nope (it holds 2 specs)"),
        (["history", "--last", "0"], "error: --last 0: give at least 1"),
        (["history", "--history", "mysql://h/db"], "error: --history 'mysql://h/db': unknown scheme 'mysql'"),
        (["history", "import"], "error: history import: name run folders or results.json files"),
        (["history", "import", "missing-folder"], "error: history import: "),
        (["report", "run0", "--history"], "error: report --history draws each spec's trend into the HTML report"),
    ],
)
def test_bad_input_is_one_line(filled: Path, capsys: pytest.CaptureFixture[str], argv: list[str], said: str) -> None:
    assert main([*argv, *(["--history", str(filled)] if argv[0] == "history" and "--history" not in argv else [])]) == 2
    err = capsys.readouterr().err
    assert err.startswith(said) and err.count("\n") == 1, err


def test_no_history_yet_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--history", str(tmp_path / "none.sqlite")]) == 2
    assert "no run history at" in capsys.readouterr().err
    assert not (tmp_path / "none.sqlite").exists()


def test_report_draws_each_specs_trend(filled: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "run2"), "--html", str(page), "--history", str(filled)]) == 0
    text = page.read_text()
    assert text.count("over its past runs") == 2
    assert "final_loss, last 3 runs" in text and ">run</text>" in text


def test_the_run_report_shows_what_the_history_found(tmp_path: Path) -> None:
    from harness.records import load_document
    from harness.report.html import render_html

    results = _run(tmp_path / "run", {"a": 1.0}, outcome="failed")
    document = load_document(results)
    document.other["history"] = {
        "drift": [{"spec": "a", "text": "final_loss +4.1% since abc1234, over 3 runs; noise ±0.8%"}],
        "flaky": [{"spec": "a", "text": "failed 3 of the last 20 runs on unchanged code"}],
        "new_failures": [],
        "quarantined": ["a"],
        "warning": None,
    }
    page = render_html([document])
    assert "drift a: final_loss +4.1% since abc1234, over 3 runs; noise ±0.8%" in page
    assert "flaky a: failed 3 of the last 20 runs on unchanged code (quarantined)" in page


def test_sparkline() -> None:
    assert sparkline([1.0, None, 2.0, 1.5]) == "▁ █▅"
    assert sparkline([3.0, 3.0]) == "▁▁" and sparkline([None]) == ""


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("history = 5", "tool.trainspec.history: expected a string, found 5"),
        ('history = "mysql://h/db"', "--history 'mysql://h/db': unknown scheme 'mysql'"),
        ('quarantine = "yes"', "tool.trainspec.quarantine: expected true or false"),
    ],
)
def test_bad_settings_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], setting: str, said: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(f"[tool.trainspec]\n{setting}\n")
    assert main(["history"]) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1, err
