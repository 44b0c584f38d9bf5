"""What the history says of this run's specs: drift per metric, flaky specs, new failures, quarantine.

Drift compares runs of one device kind and set of versions in commit order. Flaky compares
runs on one fingerprint (the same spec, code, harness, libraries and devices): a spec that
both passed and failed there fails for reasons that are not in the code.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from harness.history import drift
from harness.history.findings import FAILED, DriftFinding, Findings, FlakyFinding
from harness.history.store import Store
from harness.history.tables import spec_runs
from harness.records import SpecResult

# Columns a trend or a drift can follow; any metric the training log carried is read from the metrics column.
COLUMNS = ("final_loss", "perplexity", "duration", "peak_gpu_memory")
# Every column but the loss curve: the largest, and neither a trend nor a drift reads it.
WITHOUT_CURVE = [column for column in spec_runs.c if column.name != "loss_curve"]
FLAKY_WINDOW = 20
# Passes in a row on unchanged code after which a flaky spec's failure fails the run again.
CLEAN_STREAK = 5
NUMERIC_CHECKS = ("loss", "metrics", "perplexity", "baseline", "curve", "parity")


def metric_value(row: dict[str, Any], metric: str) -> float | None:
    if metric in COLUMNS:
        value = row.get(metric)
    else:
        value = json.loads(row.get("metrics") or "{}").get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def comparable_runs(store: Store, spec_id: str, device_kind: str, versions_key: str) -> list[dict[str, Any]]:
    """The spec's last WINDOW runs on this device kind and these versions, oldest commit first."""
    query = (
        sa.select(*WITHOUT_CURVE)
        .where(
            spec_runs.c.spec_id == spec_id,
            spec_runs.c.device_kind == device_kind,
            spec_runs.c.versions_key == versions_key,
            spec_runs.c.outcome.in_(("passed", *FAILED)),
        )
        .order_by(spec_runs.c.commit_time.desc().nulls_last(), spec_runs.c.created.desc(), spec_runs.c.id.desc())
        .limit(drift.WINDOW)
    )
    return list(reversed(store.query(query)))


def drift_of(spec_id: str, rows: list[dict[str, Any]]) -> list[DriftFinding]:
    metrics = list(COLUMNS) + sorted({name for row in rows for name in json.loads(row.get("metrics") or "{}")})
    found = []
    for metric in metrics:
        points = [(row, value) for row in rows if (value := metric_value(row, metric)) is not None]
        shift = drift.detect([value for _, value in points])
        if shift is None:
            continue
        commit = points[shift.first][0].get("commit")
        found.append(
            DriftFinding(
                spec_id,
                metric,
                commit,
                shift.change,
                shift.runs,
                shift.relative_noise,
                drift.describe(metric, shift, commit),
            )
        )
    return found


def on_fingerprint(store: Store, spec_id: str, fingerprint: str, before_run: int) -> list[dict[str, Any]]:
    """The spec's last FLAKY_WINDOW runs on this fingerprint before run `before_run`, newest first."""
    query = (
        sa.select(spec_runs.c.outcome, spec_runs.c.run_id)
        .where(spec_runs.c.spec_id == spec_id, spec_runs.c.fingerprint == fingerprint, spec_runs.c.run_id < before_run)
        .order_by(spec_runs.c.run_id.desc())
        .limit(FLAKY_WINDOW)
    )
    return store.query(query)


def numeric(record: SpecResult) -> bool:
    """A failure of the numbers: its failure kind says so, or (where none was decided) a failed loss, metric,
    perplexity or baseline check."""
    if record.failure_kind is not None:
        return record.failure_kind == "numeric"
    return any(
        not check["passed"] and check["severity"] == "fail" and check["name"].startswith(NUMERIC_CHECKS)
        for check in record.checks
    ) or any(regression["severity"] == "fail" for regression in record.regressions)


def flaky_of(record: SpecResult, earlier: list[dict[str, Any]], quarantine: bool, findings: Findings) -> None:
    """Flaky, new failure or quarantined, from this record and the runs before it on the same code."""
    outcomes = [row["outcome"] for row in earlier]
    failed_now = record.outcome in FAILED
    known_flaky = "passed" in outcomes and any(o in FAILED for o in outcomes)
    recent = [record.outcome, *outcomes][:FLAKY_WINDOW]
    failures = sum(o in FAILED for o in recent)
    # This run's failure alone, after passes, is a new failure until a pass or another failure says otherwise.
    if any(o in FAILED for o in outcomes) and "passed" in recent:
        findings.flaky.append(
            FlakyFinding(
                record.id,
                failures,
                len(recent),
                f"failed {failures} of the last {len(recent)} runs on unchanged code",
            )
        )
    if not failed_now:
        return
    if not known_flaky:
        if outcomes and outcomes[0] == "passed":
            findings.new_failures.append(record.id)
        return
    clean = len(outcomes) >= CLEAN_STREAK and all(o == "passed" for o in outcomes[:CLEAN_STREAK])
    # A numeric failure is the one a rerun must never hide: it fails the run, flaky or not.
    if quarantine and not clean and not numeric(record):
        findings.quarantined.append(record.id)


def analyse(
    store: Store, run_id: int, records: list[SpecResult], device_kind: str, versions_key: str, quarantine: bool
) -> Findings:
    findings = Findings()
    for record in records:
        if record.outcome not in ("passed", *FAILED):
            continue
        findings.drift += drift_of(record.id, comparable_runs(store, record.id, device_kind, versions_key))
        if record.fingerprint:
            flaky_of(record, on_fingerprint(store, record.id, record.fingerprint, run_id), quarantine, findings)
    return findings
