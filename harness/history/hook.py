"""The run's side of the history: after results.json is written, append the run and say what its past shows.

Called by the controller once per run. The run's git facts and what the history found go
into results.json too; a store that cannot be reached or is damaged costs one warning line,
never the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.history.facts import git_facts, rows
from harness.history.findings import FAILED, Findings
from harness.history.location import LocationError, StoreError, from_values, shown
from harness.records import RunDocument, SpecResult, load_document


@dataclass
class RunHistory:
    store: str | None = None
    findings: Findings = field(default_factory=Findings)
    warning: str | None = None
    fail_on_drift: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"store": self.store, "warning": self.warning, **self.findings.to_json()}

    def exit_status(self, status: int, records: list[SpecResult], other_failure: bool) -> int:
        """pytest's exit status once drift (with --fail-on-drift) and quarantine are weighed in."""
        if self.fail_on_drift and self.findings.drift and status == 0:
            return 1
        failing = {r.id for r in records if r.outcome in FAILED}
        quarantined = failing and failing <= set(self.findings.quarantined)
        if status == 1 and quarantined and not other_failure and not (self.fail_on_drift and self.findings.drift):
            return 0
        return status

    def summary_lines(self) -> list[str]:
        lines = [f"WARN  history not recorded: {self.warning}"] if self.warning else []
        found = self.findings
        failing = " (fails the run: --fail-on-drift)" if self.fail_on_drift else ""
        lines += [f"DRIFT {d.spec}: {d.text}{failing}" for d in found.drift]
        lines += [f"NEW   {spec}: failed; it passed the last time on the same code" for spec in found.new_failures]
        for flaky in found.flaky:
            state = " (quarantined: its failure does not fail the run)" if flaky.spec in found.quarantined else ""
            lines.append(f"FLAKY {flaky.spec}: {flaky.text}{state}")
        return lines


def _append(document: RunDocument, url: str, quarantine: bool) -> Findings:
    """Append the run to the store at `url` and read what its past says; StoreError (or the driver's own) otherwise."""
    # Here, not at the top: an environment without the SQL toolkit loses the history, not the run.
    from harness.history.analysis import analyse
    from harness.history.store import open_store

    store = open_store(url)
    try:
        run, specs = rows(document)
        run_id = store.append(run, specs)
        if run_id is None:
            return Findings()
        return analyse(store, run_id, document.specs, run["device_kind"], run["versions_key"], quarantine)
    finally:
        store.close()


def after_run(results: Path, values: dict[str, Any], repo: Path) -> RunHistory:
    """Append the run in `results` (its results.json) to the history and rewrite the file with what was found."""
    document = load_document(results)
    document.other["git"] = git_facts(repo)
    history = RunHistory(fail_on_drift=bool(values.get("fail_on_drift")))
    try:
        url = from_values(values, repo)
    except LocationError as error:
        url, history.warning = None, str(error)
    if url is not None:
        history.store = shown(url)
        try:
            history.findings = _append(document, url, bool(values.get("quarantine")))
        except StoreError as error:
            history.warning = f"{error} (the run's records are in {results})"
        except Exception as error:  # noqa: BLE001  # whatever the driver or an import raises, the verdict stands
            history.warning = f"history {history.store}: {type(error).__name__}: {error} (records in {results})"
    document.other["history"] = history.to_json()
    document.write(results)
    return history
