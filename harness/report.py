"""What a person reads: the terminal summary of a run (HTML and cross-run tables build on it)."""

from __future__ import annotations

from pathlib import Path

from .results import SpecResult

MARKS = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP", "error": "ERROR"}


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def summary_lines(records: list[SpecResult], run_dir: Path) -> list[str]:
    """One aligned row per spec, then where everything is."""
    rows = [("", "spec", "time", "devices", "steps", "final loss", "reason")]
    for r in records:
        devices = ",".join(r.devices) if r.devices else "-"
        time = f"{r.duration:.1f}s" if r.duration else "-"
        rows.append((MARKS.get(r.outcome, r.outcome), r.id, time, devices, str(r.steps_logged or "-"), _loss(r.final_loss), r.reason[:120]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    lines.append(f"results: {run_dir / 'results.json'}")
    lines.append(f"run directory: {run_dir}")
    return [line.rstrip() for line in lines]
