"""The history store on both engines: schema, appends, concurrent writers, a killed writer, a damaged store;
flaky specs, quarantine and drift read back from it (harness.history)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from harness.history.analysis import CLEAN_STREAK, analyse
from harness.history.facts import rows
from harness.history.hook import after_run
from harness.history.store import StoreError, open_store
from harness.history.tables import runs, spec_runs
from harness.records import RunDocument, SpecResult, write_results

VERSIONS = {"python": "3.11.2", "torch": "2.13.0", "transformers": "4.57.6", "cuda": None}


def document(n: int, specs: list[SpecResult], commit: str | None = None) -> RunDocument:
    return RunDocument(
        specs=specs,
        created=f"2026-12-03T10:{n // 60:02d}:{n % 60:02d}+00:00",
        run_dir=f"/runs/{n}",
        backend="local",
        versions=VERSIONS,
        devices={"kind": "cpu"},
        other={"git": {"commit": commit or f"{n:040x}", "commit_time": 1_700_000_000 + n, "branch": "main"}},
    )


def record(spec_id: str, outcome: str = "passed", loss: float = 1.0, **fields: object) -> SpecResult:
    return SpecResult(
        id=spec_id,
        outcome=outcome,  # type: ignore[arg-type]
        final_loss=loss,
        duration=2.0,
        fingerprint=str(fields.pop("fingerprint", "f1")),
        metric_curves={"grad_norm": [[1, 2.0], [2, 0.5]]},
        loss_curve=[[float(s), 1.0 / s] for s in range(1, 500)],
        **fields,  # type: ignore[arg-type]
    )


def append(store, n: int, specs: list[SpecResult], commit: str | None = None) -> int | None:
    run, spec_rows = rows(document(n, specs, commit))
    return store.append(run, spec_rows)


def test_append_and_read_back(history_url: str) -> None:
    store = open_store(history_url)
    try:
        run_id = append(store, 1, [record("a"), record("b", "failed", failure_kind="code"), record("c", "skipped")])
        assert run_id is not None
        assert append(store, 1, [record("a")]) is None  # the same run (run folder and time) is one row
        got = store.query(sa.select(spec_runs).order_by(spec_runs.c.spec_id))
        assert [(r["spec_id"], r["outcome"], r["failure_kind"]) for r in got] == [
            ("a", "passed", None),
            ("b", "failed", "code"),
        ]
        assert json.loads(got[0]["metrics"]) == {"grad_norm": 0.5}
        assert len(json.loads(got[0]["loss_curve"])) <= 101
        assert got[0]["commit"] == f"{1:040x}" and got[0]["device_kind"] == "cpu"
        assert store.query(sa.select(runs.c.branch))[0]["branch"] == "main"
    finally:
        store.close()
    again = open_store(history_url)  # opening a current schema migrates nothing and keeps the rows
    assert len(again.query(sa.select(spec_runs.c.id))) == 2
    with again.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    again.close()


def _writer(url: str, first: int, count: int) -> None:
    store = open_store(url)
    for n in range(first, first + count):
        append(store, n, [record(f"spec{i}") for i in range(5)])
    store.close()


def test_concurrent_writers_lose_no_row(history_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(history_url, 100 * w, 15)) for w in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=600)
        assert writer.exitcode == 0
    store = open_store(history_url)
    assert len(store.query(sa.select(runs.c.id))) == 60
    assert len(store.query(sa.select(spec_runs.c.id))) == 300
    store.close()


KILLED_WRITER = """
import sys
from tests.unit.test_history_store import append, record
from harness.history.store import open_store
store = open_store(sys.argv[1])
print("open", flush=True)
n = 0
while True:
    append(store, n, [record(f"spec{i}") for i in range(40)])
    n += 1
"""


def test_a_writer_killed_mid_write_leaves_the_store_readable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.sqlite'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), *sys.path])}
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, url], stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None and child.stdout.readline() == "open\n"
    store = open_store(url)
    deadline = time.time() + 120
    while time.time() < deadline and len(store.query(sa.select(runs.c.id))) < 3:
        time.sleep(0.05)
    store.close()
    child.send_signal(signal.SIGKILL)
    child.wait()
    with sqlite3.connect(tmp_path / "history.sqlite") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = open_store(url)
    counts = store.query(sa.select(spec_runs.c.run_id, sa.func.count().label("n")).group_by(spec_runs.c.run_id))
    assert len(counts) >= 3 and {row["n"] for row in counts} == {40}  # every run whole: all its rows or none
    store.close()


def test_a_damaged_store_costs_a_warning_not_the_run(tmp_path: Path) -> None:
    store_file = tmp_path / "history.sqlite"
    store_file.write_bytes(b"this is not a database" * 100)
    results = write_results(tmp_path, [record("a", "failed")], {"backend": "local", "devices": {"kind": "cpu"}})
    history = after_run(results, {"history": str(store_file)}, tmp_path)
    assert history.warning is not None and "history.sqlite" in history.warning
    kept = json.loads(results.read_text())
    assert kept["specs"][0]["id"] == "a" and kept["history"]["warning"] == history.warning
    assert history.exit_status(1, [record("a", "failed")], False) == 1


def test_an_unreachable_server_costs_a_warning(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    results = write_results(tmp_path, [record("a")], {"backend": "local", "devices": {"kind": "cpu"}})
    history = after_run(results, {"history": "postgresql://nobody@127.0.0.1:1/none"}, tmp_path)
    assert history.warning and "127.0.0.1" in history.warning and "OperationalError" in history.warning


def test_a_newer_schema_is_refused_by_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.sqlite'}"
    open_store(url).close()
    with sqlite3.connect(tmp_path / "history.sqlite") as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StoreError, match="newer than this harness"):
        open_store(url)


def test_flaky_new_failures_and_quarantine(history_url: str) -> None:
    store = open_store(history_url)
    try:
        append(store, 1, [record("flaky"), record("steady"), record("numbers")])
        append(
            store,
            2,
            [
                record("flaky", "failed", failure_kind="infra"),
                record("steady"),
                record("numbers", "failed", failure_kind="numeric"),
            ],
        )
        append(store, 3, [record("flaky"), record("steady"), record("numbers")])
        now = [
            record("flaky", "failed", failure_kind="infra"),
            record("steady", "failed", failure_kind="code"),
            record("numbers", "failed", failure_kind="numeric"),
        ]
        run_id = append(store, 4, now)
        assert run_id is not None
        found = analyse(store, run_id, now, "cpu", rows(document(4, now))[0]["versions_key"], quarantine=True)
    finally:
        store.close()
    assert {f.spec: f.text for f in found.flaky} == {
        "flaky": "failed 2 of the last 4 runs on unchanged code",
        "numbers": "failed 2 of the last 4 runs on unchanged code",
    }
    assert found.new_failures == ["steady"]
    assert found.quarantined == ["flaky"]  # a numeric failure is never quarantined


def test_a_clean_streak_ends_quarantine(history_url: str) -> None:
    store = open_store(history_url)
    try:
        append(store, 0, [record("s", "failed", failure_kind="infra")])
        for n in range(1, CLEAN_STREAK + 1):
            append(store, n, [record("s")])
        now = [record("s", "failed", failure_kind="infra")]
        run_id = append(store, 99, now)
        assert run_id is not None
        key = rows(document(0, now))[0]["versions_key"]
        found = analyse(store, run_id, now, "cpu", key, quarantine=True)
        assert found.quarantined == [] and [f.spec for f in found.flaky] == ["s"]
    finally:
        store.close()


def test_drift_is_named_at_its_commit(history_url: str) -> None:
    store = open_store(history_url)
    try:
        losses = [1.0, 1.01, 0.99] * 10 + [1.041, 1.05, 1.032]
        for n, loss in enumerate(losses):
            run_id = append(store, n, [record("a", loss=loss)], commit=f"c{n:02d}".ljust(40, "0"))
        assert run_id is not None
        now = [record("a", loss=losses[-1])]
        found = analyse(store, run_id, now, "cpu", rows(document(0, now))[0]["versions_key"], quarantine=False)
        assert [d.text for d in found.drift] == ["final_loss +4.1% since c300000, over 3 runs; noise ±0.8%"]
        other = analyse(store, run_id, now, "cuda", rows(document(0, now))[0]["versions_key"], quarantine=False)
        assert other.drift == []  # another device kind's runs are another series
    finally:
        store.close()


def test_quarantine_and_drift_decide_the_exit_status(tmp_path: Path) -> None:
    from harness.history.analysis import DriftFinding, Findings
    from harness.history.hook import RunHistory

    failed = [record("flaky", "failed"), record("ok")]
    quarantined = RunHistory(findings=Findings(quarantined=["flaky"]))
    assert quarantined.exit_status(1, failed, other_failure=False) == 0
    assert quarantined.exit_status(1, failed, other_failure=True) == 1  # the run wrote into the repository
    assert quarantined.exit_status(1, [*failed, record("new", "failed")], other_failure=False) == 1
    drifted = RunHistory(findings=Findings(drift=[DriftFinding("ok", "final_loss", None, 0.1, 3, 0.01, "x")]))
    assert drifted.exit_status(0, failed[1:], other_failure=False) == 0
    drifted.fail_on_drift = True
    assert drifted.exit_status(0, failed[1:], other_failure=False) == 1


def test_an_environment_without_the_sql_toolkit_loses_the_history_not_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "harness.history.analysis", None)  # the import fails as a missing package would
    results = write_results(tmp_path, [record("a")], {"backend": "local", "devices": {"kind": "cpu"}})
    history = after_run(results, {"history": str(tmp_path / "h.sqlite")}, tmp_path)
    assert history.warning and "ModuleNotFoundError" in history.warning
    assert history.exit_status(0, [record("a")], False) == 0
    assert json.loads(results.read_text())["specs"][0]["outcome"] == "passed"
