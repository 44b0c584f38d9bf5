"""What both reports show, worked out once from typed run documents: labels, totals, the spec × run rows.

The Markdown summary (`report/summary.py`) and the HTML page (`report/html.py`) format these; the
documents arrive checked by `records.RunDocument.from_json`, so nothing here guesses at types.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness.records import Regression, RunDocument

EMOJI = {"passed": "✅", "failed": "❌", "skipped": "⏭️", "error": "💥"}
FAILING = ("failed", "error")
NOT_RUN = "—"


def combination_label(document: RunDocument) -> str:
    """ "torch X · transformers Y" as the training children imported them, which is what was tested.

    The children's versions win over the harness env's pins because a spec may run in another
    interpreter; the most common one stands for the run, and the pins fill what they lack.
    """
    seen = Counter(
        (s.child_versions.get("torch"), s.child_versions.get("transformers"))
        for s in document.specs
        if s.child_versions.get("torch") or s.child_versions.get("transformers")
    )
    torch, transformers = seen.most_common(1)[0][0] if seen else (None, None)
    versions = (
        ("torch", torch or document.versions.get("torch")),
        ("transformers", transformers or document.versions.get("transformers")),
    )
    return " · ".join(f"{name} {version}" for name, version in versions if version) or "unknown versions"


def label_problem(labels: list[str], count: int) -> str | None:
    """Why `--label` values cannot name `count` runs, or None when they can."""
    if len(labels) != count:
        return (
            f"--label given {len(labels)} time{'s' * (len(labels) != 1)} for {count} result{'s' * (count != 1)}: "
            "give one per result, in the order given"
        )
    if empty := [i + 1 for i, label in enumerate(labels) if not label.strip()]:
        return f"--label number {empty[0]} is empty"
    return None


def titles(documents: list[RunDocument], labels: list[str] | None = None) -> list[str]:
    """Column titles: the given labels, else the combination told apart by the run directory when two runs share one."""
    if labels:
        return labels
    combos = [combination_label(d) for d in documents]
    return [
        f"{combo} ({Path(d.run_dir or str(i + 1)).name})" if combos.count(combo) > 1 else combo
        for i, (combo, d) in enumerate(zip(combos, documents, strict=True))
    ]


def totals(document: RunDocument) -> dict[str, int]:
    """Outcome counts, worst news last as in pytest's line; from the specs, the summary only when they are gone."""
    counts: Counter[str] = Counter(s.outcome for s in document.specs) or Counter(document.summary)
    return dict(sorted(counts.items(), key=lambda item: list(EMOJI).index(item[0]) if item[0] in EMOJI else len(EMOJI)))


@dataclass(frozen=True)
class Cell:
    """One spec in one run; the deltas are against the first run (None: no pair)."""

    outcome: str | None  # None: the spec did not run in this run
    reason: str = ""
    final_loss: float | None = None
    perplexity: float | None = None
    duration: float | None = None
    loss_delta: float | None = None
    perplexity_delta: float | None = None
    duration_change: float | None = None  # a fraction: 0.25 is 25 % slower than the first
    kind: str | None = None  # the failure kind of a failed spec


@dataclass(frozen=True)
class Row:
    spec_id: str
    cells: list[Cell]

    @property
    def failing(self) -> bool:
        return any(cell.outcome in FAILING for cell in self.cells)


def _delta(now: float | None, then: float | None) -> float | None:
    return None if now is None or then is None else now - then


def comparison_rows(documents: list[RunDocument]) -> list[Row]:
    """One row per spec id (first-seen order), one cell per document."""
    by_doc = [{s.id: s for s in d.specs} for d in documents]
    ids = list(dict.fromkeys(spec_id for specs in by_doc for spec_id in specs))
    rows = []
    for spec_id in ids:
        first = by_doc[0].get(spec_id) if by_doc else None
        cells = []
        for index, specs in enumerate(by_doc):
            spec = specs.get(spec_id)
            if spec is None:
                cells.append(Cell(None))
                continue
            # A duration of 0 means "not measured" (a skip), as in the terminal summary.
            secs = spec.duration or None
            paired = first if index and first is not None else None
            cells.append(
                Cell(
                    spec.outcome,
                    spec.reason,
                    spec.final_loss,
                    spec.perplexity,
                    secs,
                    _delta(spec.final_loss, paired.final_loss) if paired else None,
                    _delta(spec.perplexity, paired.perplexity) if paired else None,
                    secs / paired.duration - 1 if paired and secs is not None and paired.duration else None,
                    spec.failure_kind,
                )
            )
        rows.append(Row(spec_id, cells))
    return rows


# ---------------------------------------------------------------- text formatting


def fmt(value: float | None) -> str:
    return NOT_RUN if value is None or not math.isfinite(value) else f"{value:.4g}"


def with_sign(value: float) -> str:
    return "±0" if value == 0 else f"{value:+.3g}".replace("-", "−")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NOT_RUN
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} m {seconds % 60:02.0f} s"


def percent(change: float) -> str:
    return f"{change:+.0%}".replace("-", "−")


def delta_note(delta: float | None) -> str:
    return "" if delta is None else f" (Δ {with_sign(delta)})"


def regression_text(regression: Regression) -> str:
    """'final_loss 1.1 → 1.4 (+27%, allowed +10% or +0.002, fail)': enough to judge without opening the baseline."""
    then, now = regression["baseline"], regression["current"]
    notes = [percent(now / then - 1)] if then and now is not None else []
    allowed = f"allowed +{regression['tolerance']:.0%}"
    if "tolerance_abs" in regression:
        allowed += f" or +{regression['tolerance_abs']:.4g}"
    notes += [allowed, regression["severity"]]
    where = f" at step {regression['step']:.6g}" if regression.get("step") is not None else ""
    return f"{regression['metric']}{where} {fmt(then)} → {fmt(now)} ({', '.join(notes)})"
