"""What a person reads: the terminal summary, a Markdown CI summary and (in `report/html.py`) an offline HTML
page.

Everything is a pure function of `results.json` documents read through the typed schema of
`records.py`, so the same code renders a fresh run, an old run read back from disk, or several
runs side by side (one per torch × transformers combination). The shared rows and labels are
in `report/rows.py`, the charts in `report/svg.py`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from harness.records import RunDocument, SpecResult
from harness.report.html import render_html, write_run_report
from harness.report.kinds import failures_by_kind, kind_lines, recovered
from harness.report.rows import (
    EMOJI,
    FAILING,
    NOT_RUN,
    Cell,
    clip,
    combination_label,
    comparison_rows,
    delta_note,
    duration,
    fmt,
    label_problem,
    percent,
    regression_text,
    titles,
    totals,
)

__all__ = [
    "combination_label",
    "comparison_rows",
    "label_problem",
    "render_html",
    "render_markdown",
    "summary_lines",
    "table",
    "write_run_report",
]

MARKS = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP", "error": "ERROR", "unchanged": "SAME"}


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as aligned columns, two spaces apart, without trailing blanks."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def summary_lines(records: list[SpecResult], run_dir: Path) -> list[str]:
    """One aligned row per spec, then where everything is."""
    # The peak memory column only where something was measured (real NVIDIA GPUs).
    measured = any(r.peak_gpu_memory for r in records)
    rows = [("", "spec", "time", "devices", *(["peak MiB"] if measured else []), "steps", "final loss", "reason")]
    for r in records:
        devices = ",".join(r.devices) or r.placement or "-"
        time = f"{r.duration:.1f}s" if r.duration else "-"
        loss = "-" if r.final_loss is None else f"{r.final_loss:.4g}"
        peaks = (
            [",".join(str(r.peak_gpu_memory.get(d, "-")) for d in r.devices) if r.peak_gpu_memory else "-"]
            if measured
            else []
        )
        # A failure's kind leads its reason; a pass on a retry says what it recovered from.
        reason = f"[{r.failure_kind}] {r.reason}" if r.failure_kind and r.outcome in FAILING else r.reason
        rows.append(
            (
                "FLAKY" if r.flaky else MARKS.get(r.outcome, r.outcome),
                r.id,
                time,
                devices,
                *peaks,
                str(r.steps_logged or "-"),
                loss,
                (recovered(r) or reason)[:120],
            )
        )
    # pytest's own line counts a reused spec among the skips; this one keeps them apart, and always counts the skips.
    counts: Counter[str] = Counter(r.outcome for r in records)
    totals = ", ".join(f"{counts[o]} {o}" for o in MARKS if counts[o] and o != "skipped") or "none run"
    return [
        *table(rows),
        *kind_lines(records),
        f"{totals}, {counts['skipped']} skipped",
        f"results: {run_dir / 'results.json'}",
        f"report: {run_dir / 'report.html'}",
        f"run directory: {run_dir}",
    ]


def nothing_ran(records: list[SpecResult]) -> str | None:
    """`nothing ran: N specs skipped (reasons)` when every spec of the run was skipped, else None."""
    if not records or any(r.outcome != "skipped" for r in records):
        return None
    reasons = Counter(r.reason or "no reason recorded" for r in records)
    said = "; ".join(f"{reason}" + (f" (x{n})" if n > 1 else "") for reason, n in reasons.most_common())
    return f"nothing ran: {len(records)} spec{'s' if len(records) != 1 else ''} skipped ({said})"


def _md(text: str) -> str:
    """Plain text safe inside a GitHub table cell or bullet: no pipes, no line breaks, no raw HTML."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(cell: Cell) -> str:
    if cell.outcome is None:
        return f"{NOT_RUN} not run"
    parts = [f"{EMOJI.get(cell.outcome, '')} {cell.outcome}".strip()]
    if cell.outcome != "skipped":  # "loss —" is news for a run that trained (it went NaN); not for a skip
        parts.append(f"loss {fmt(cell.final_loss)}{delta_note(cell.loss_delta)}")
    if cell.perplexity is not None:
        parts.append(f"ppl {cell.perplexity:.4g}{delta_note(cell.perplexity_delta)}")
    if cell.duration is not None:
        parts.append(
            duration(cell.duration)
            + (f" ({percent(cell.duration_change)})" if cell.duration_change is not None else "")
        )
    return " · ".join(parts)


def render_markdown(documents: list[RunDocument], labels: list[str] | None = None) -> str:
    """A heading, totals per run, the spec × run table, then what failed and why.

    `labels` name the runs in order (default: their torch · transformers combination).
    """
    names = titles(documents, labels)
    lines = ["## trainspec results", ""]
    for name, document in zip(names, documents, strict=True):
        counts = " · ".join(f"{EMOJI.get(k, '')} {n} {k}".strip() for k, n in totals(document).items()) or "no specs"
        seconds = sum(s.duration for s in document.specs)
        lines.append(f"- **{_md(name)}**: {counts}" + (f" · {duration(seconds)} of training" if seconds else ""))
    rows = comparison_rows(documents)
    if rows:
        header = ["spec"] + [_md(t) + (" (Δ vs first)" if i else "") for i, t in enumerate(names)]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += [f"| `{_md(row.spec_id)}` | " + " | ".join(_md_cell(c) for c in row.cells) + " |" for row in rows]
    failures, regressions = [], []
    for name, document in zip(names, documents, strict=True):
        where = f" ({_md(name)})" if len(documents) > 1 else ""
        by_id = {spec.id: spec for spec in document.specs}
        # Failures grouped by kind, so the machine's are told from the code's and the numbers' at a glance.
        for kind, ids in failures_by_kind(document.specs).items():
            for spec in (by_id[spec_id] for spec_id in ids):
                found = [f"  - regression: {_md(regression_text(r))}" for r in spec.regressions]
                reason = _md(clip(spec.reason or "no reason recorded", 500))
                failures += [f"- {EMOJI[spec.outcome]} **{kind}** `{_md(spec.id)}`{where}: {reason}", *found]
        for spec in document.specs:
            found = [f"  - regression: {_md(regression_text(r))}" for r in spec.regressions]
            if spec.outcome not in FAILING and found:
                regressions += [f"- ⚠️ `{_md(spec.id)}`{where}", *found]
    for heading, items in (("Failures", failures), ("Regressions", regressions)):
        if items:
            lines += ["", f"### {heading}", "", *items]
    return "\n".join(lines) + "\n"
