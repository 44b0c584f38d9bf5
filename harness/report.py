"""What a person reads: the terminal summary, a Markdown CI summary and an offline HTML page.

Everything here is a pure function of `results.json` documents (see `results.py`), so the
same code renders a fresh run, an old run read back from disk, or several runs side by
side (one per torch × transformers combination). Only the standard library: the page must
open from a CI artifact with no network, so the CSS and the loss curves (SVG) are inline.
Documents are read defensively: older files lack newer keys, and a report must never be
the thing that crashes at the end of a long run.
"""

from __future__ import annotations

import html
import math
import os
import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .files import atomic_write_text
from .results import SpecResult

MARKS = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP", "error": "ERROR"}
EMOJI = {"passed": "✅", "failed": "❌", "skipped": "⏭️", "error": "💥"}
FAILING = ("failed", "error")
NOT_RUN = "—"
# Colour-blind-safe (Okabe–Ito) and no red, which the page keeps for failures.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#7f6b00")


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as aligned columns, two spaces apart, without trailing blanks."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def summary_lines(records: list[SpecResult], run_dir: Path) -> list[str]:
    """One aligned row per spec, then where everything is."""
    rows = [("", "spec", "time", "devices", "steps", "final loss", "reason")]
    for r in records:
        devices = ",".join(r.devices) or r.placement or "-"
        time = f"{r.duration:.1f}s" if r.duration else "-"
        rows.append(("FLAKY" if r.flaky else MARKS.get(r.outcome, r.outcome), r.id, time, devices, str(r.steps_logged or "-"), _loss(r.final_loss), r.reason[:120]))
    return [*table(rows), f"results: {run_dir / 'results.json'}", f"report: {run_dir / 'report.html'}", f"run directory: {run_dir}"]


# ---------------------------------------------------------------- reading documents


def _num(value: object) -> float | None:
    """A finite number or None: JSON from older or hand-edited files may hold anything."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _items(value: object, kind: type) -> list:
    return [item for item in value if isinstance(item, kind)] if isinstance(value, list) else []


def _specs(document: dict) -> list[dict]:
    return [spec for spec in _items(document.get("specs"), dict) if spec.get("id")]


def _outcome(spec: dict) -> str:
    # A record without an outcome is a run that broke before deciding: count it as an error.
    return str(spec.get("outcome") or "error")


def combination_label(document: dict) -> str:
    """"torch X · transformers Y" as the training children imported them, which is what was tested.

    The children's versions win over the harness env's pins because a spec may run in another
    interpreter; the most common one stands for the run, and the pins fill what they lack.
    """
    pins = document.get("versions") if isinstance(document.get("versions"), dict) else {}
    seen = Counter(
        (child.get("torch"), child.get("transformers"))
        for spec in _specs(document)
        if isinstance(child := spec.get("child_versions"), dict) and (child.get("torch") or child.get("transformers"))
    )
    torch, transformers = seen.most_common(1)[0][0] if seen else (None, None)
    versions = (("torch", torch or pins.get("torch")), ("transformers", transformers or pins.get("transformers")))
    return " · ".join(f"{name} {version}" for name, version in versions if version) or "unknown versions"


def _titles(documents: list[dict]) -> list[str]:
    """Column titles: the combination, told apart by the run directory when two runs share one."""
    labels = [combination_label(d) for d in documents]
    return [f"{label} ({Path(str(d.get('run_dir') or i + 1)).name})" if labels.count(label) > 1 else label
            for i, (label, d) in enumerate(zip(labels, documents))]


def _totals(document: dict) -> dict[str, int]:
    """Outcome counts, worst news last as in pytest's line; from the specs, the summary only when they are gone."""
    counts = Counter(_outcome(spec) for spec in _specs(document))
    summary = document.get("summary")
    if not counts and isinstance(summary, dict):
        counts = Counter({str(k): v for k, v in summary.items() if isinstance(v, int)})
    return dict(sorted(counts.items(), key=lambda item: list(EMOJI).index(item[0]) if item[0] in EMOJI else len(EMOJI)))


@dataclass(frozen=True)
class Cell:
    """One spec in one combination; the deltas are against the first combination (None: no pair)."""

    outcome: str | None  # None: the spec did not run in this combination
    reason: str = ""
    final_loss: float | None = None
    perplexity: float | None = None
    duration: float | None = None
    loss_delta: float | None = None
    perplexity_delta: float | None = None
    duration_change: float | None = None  # a fraction: 0.25 is 25 % slower than the first


@dataclass(frozen=True)
class Row:
    spec_id: str
    cells: list[Cell]

    @property
    def failing(self) -> bool:
        return any(cell.outcome in FAILING for cell in self.cells)


def _delta(now: float | None, then: float | None) -> float | None:
    return None if now is None or then is None else now - then


def comparison_rows(documents: list[dict]) -> list[Row]:
    """One row per spec id (first-seen order), one cell per document."""
    by_doc = [{str(spec["id"]): spec for spec in _specs(d)} for d in documents]
    ids = list(dict.fromkeys(spec_id for specs in by_doc for spec_id in specs))
    rows = []
    for spec_id in ids:
        first = by_doc[0].get(spec_id, {}) if by_doc else {}
        cells = []
        for index, specs in enumerate(by_doc):
            spec = specs.get(spec_id)
            if spec is None:
                cells.append(Cell(None))
                continue
            # A duration of 0 means "not measured" (a skip), as in the terminal summary.
            loss, ppl, secs = _num(spec.get("final_loss")), _num(spec.get("perplexity")), _num(spec.get("duration")) or None
            base_secs = _num(first.get("duration"))
            change = secs / base_secs - 1 if index and secs is not None and base_secs else None
            cells.append(Cell(
                _outcome(spec), str(spec.get("reason") or ""), loss, ppl, secs,
                _delta(loss, _num(first.get("final_loss"))) if index else None,
                _delta(ppl, _num(first.get("perplexity"))) if index else None,
                change,
            ))
        rows.append(Row(spec_id, cells))
    return rows


# ---------------------------------------------------------------- text formatting


def _fmt(value: float | None) -> str:
    return NOT_RUN if value is None else f"{value:.4g}"


def _signed(value: float) -> str:
    return "±0" if value == 0 else f"{value:+.3g}".replace("-", "−")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return NOT_RUN
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} m {seconds % 60:02.0f} s"


def _percent(change: float) -> str:
    return f"{change:+.0%}".replace("-", "−")


def _delta_note(delta: float | None) -> str:
    return "" if delta is None else f" (Δ {_signed(delta)})"


def _regression_text(regression: dict) -> str:
    """'final_loss 1.1 → 1.4 (+27%, allowed +10%, fail)': enough to judge without opening the baseline."""
    then, now, tolerance = _num(regression.get("baseline")), _num(regression.get("current")), _num(regression.get("tolerance"))
    notes = [_percent(now / then - 1)] if then and now is not None else []
    notes += [f"allowed +{tolerance:.0%}"] if tolerance is not None else []
    notes.append(str(regression.get("severity") or "fail"))
    return f"{regression.get('metric', '?')} {_fmt(then)} → {_fmt(now)} ({', '.join(notes)})"


# ---------------------------------------------------------------- Markdown (CI job summary)


def _md(text: str) -> str:
    """Plain text safe inside a GitHub table cell or bullet: no pipes, no line breaks, no raw HTML."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(cell: Cell) -> str:
    if cell.outcome is None:
        return f"{NOT_RUN} not run"
    parts = [f"{EMOJI.get(cell.outcome, '')} {cell.outcome}".strip()]
    if cell.outcome != "skipped":  # "loss —" is news for a run that trained (it went NaN); not for a skip
        parts.append(f"loss {_fmt(cell.final_loss)}{_delta_note(cell.loss_delta)}")
    if cell.perplexity is not None:
        parts.append(f"ppl {cell.perplexity:.4g}{_delta_note(cell.perplexity_delta)}")
    if cell.duration is not None:
        parts.append(_duration(cell.duration) + (f" ({_percent(cell.duration_change)})" if cell.duration_change is not None else ""))
    return " · ".join(parts)


def render_markdown(documents: list[dict]) -> str:
    """A heading, totals per combination, the spec × combination table, then what failed and why."""
    titles = _titles(documents)
    lines = ["## trainspec results", ""]
    for title, document in zip(titles, documents):
        totals = " · ".join(f"{EMOJI.get(k, '')} {n} {k}".strip() for k, n in _totals(document).items()) or "no specs"
        seconds = sum(_num(spec.get("duration")) or 0 for spec in _specs(document))
        lines.append(f"- **{_md(title)}**: {totals}" + (f" · {_duration(seconds)} of training" if seconds else ""))
    rows = comparison_rows(documents)
    if rows:
        header = ["spec"] + [_md(t) + (" (Δ vs first)" if i else "") for i, t in enumerate(titles)]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += [f"| `{_md(row.spec_id)}` | " + " | ".join(_md_cell(c) for c in row.cells) + " |" for row in rows]
    failures, regressions = [], []
    for title, document in zip(titles, documents):
        where = f" ({_md(title)})" if len(documents) > 1 else ""
        for spec in _specs(document):
            found = [f"  - regression: {_md(_regression_text(r))}" for r in _items(spec.get("regressions"), dict)]
            if _outcome(spec) in FAILING:
                reason = _md(_clip(str(spec.get("reason") or "no reason recorded"), 500))
                failures += [f"- {EMOJI[_outcome(spec)]} `{_md(str(spec['id']))}`{where}: {reason}", *found]
            elif found:
                regressions += [f"- ⚠️ `{_md(str(spec['id']))}`{where}", *found]
    for heading, items in (("Failures", failures), ("Regressions", regressions)):
        if items:
            lines += ["", f"### {heading}", "", *items]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- SVG loss curves


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round values (1, 2 or 5 × 10^k apart) covering [low, high]."""
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _span(values: list[float], pad: float, half: float) -> tuple[float, float]:
    """A range around the values; a single value gets `half` either side so it sits mid-axis."""
    low, high = min(values), max(values)
    if high - low < 1e-12 * max(1.0, abs(high)):
        return low - half, high + half
    return low - (high - low) * pad, high + (high - low) * pad


def loss_curve_svg(series: list[tuple[str, list[list[float | None]]]], width: int = 560, height: int = 220) -> str:
    """Inline SVG with one line per (label, [[step, loss], ...]), a legend below when several; "" when no point has a finite loss.

    A missing or non-finite loss breaks the line instead of being bridged, so a NaN stretch
    shows as a gap (marked on the x axis) rather than as a plausible-looking segment.
    Astronomical values count as infinite: no axis can show them next to a loss of 1.
    """
    def plottable(value: object) -> float | None:
        number = _num(value)
        return number if number is not None and abs(number) < 1e100 else None

    curves = [[(plottable(p[0]), plottable(p[1])) for p in points if isinstance(p, (list, tuple)) and len(p) >= 2] for _, points in series]
    finite = [(s, v) for curve in curves for s, v in curve if s is not None and v is not None]
    if not finite:
        return ""
    legend = 16 * len(series) if len(series) > 1 else 0
    left, right, top, bottom = 56, 14, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    # Steps without a finite loss still widen the x axis: a run that diverged at step 10 of 60
    # must look like one, not like a lone point.
    steps = [s for curve in curves for s, _ in curve if s is not None]
    x0, x1 = _span(steps, 0.0, 1.0)
    y0, y1 = _span([v for _, v in finite], 0.05, abs(finite[0][1]) * 0.05 or 1.0)

    def x(step: float) -> float:
        return left + (step - x0) / (x1 - x0) * plot_w

    def y(loss: float) -> float:
        return top + (y1 - loss) / (y1 - y0) * plot_h

    size = f'viewBox="0 0 {width} {height + legend}" width="{width}" height="{height + legend}"'
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" {size} role="img" aria-label="loss curve" class="curve">',
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#d0d7de"/>']
    for tick in _ticks(y0, y1, 5):
        if y0 <= tick <= y1:
            out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eef1f4"/>'
                       f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.4g}</text>')
    for tick in _ticks(x0, x1, 6):
        if x0 <= tick <= x1:
            out.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" stroke="#8c959f"/>'
                       f'<text x="{x(tick):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{tick:.6g}</text>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 30}" text-anchor="middle" class="axis">step</text>'
               f'<text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" transform="rotate(-90 12 {top + plot_h / 2:.1f})" class="axis">loss</text>')
    if any(s is not None and v is None for curve in curves for s, v in curve):
        out.append(f'<text x="{left}" y="{top + plot_h + 30}" fill="#cf222e">| loss NaN or missing</text>')
    for index, ((label, _), curve) in enumerate(zip(series, curves)):
        colour, name = PALETTE[index % len(PALETTE)], html.escape(label)
        # Runs of one seed often coincide exactly; dashes let the first line show through the later ones.
        dash = f' stroke-dasharray="{3 + 3 * index} 4"' if index else ""
        segments: list[list[tuple[float, float]]] = [[]]
        for step, loss in curve:
            if step is None:
                continue
            if loss is None:
                segments.append([])
                out.append(f'<path d="M{x(step):.1f} {top + plot_h - 5}v10" stroke="#cf222e" stroke-width="2">'
                           f"<title>{name}: no finite loss at step {step:.6g}</title></path>")
            else:
                segments[-1].append((x(step), y(loss)))
        for segment in filter(None, segments):
            if len(segment) == 1:
                out.append(f'<circle cx="{segment[0][0]:.1f}" cy="{segment[0][1]:.1f}" r="3" fill="{colour}"><title>{name}</title></circle>')
            else:
                points = " ".join(f"{px:.1f},{py:.1f}" for px, py in segment)
                out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash} stroke-linejoin="round">'
                           f"<title>{name}</title></polyline>")
        if legend:
            ly = height + 16 * index + 4
            empty = " (no finite loss)" if curve and all(v is None for _, v in curve) else ""
            out.append(f'<line x1="{left}" x2="{left + 24}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="3"{dash}/>'
                       f'<text x="{left + 30}" y="{ly + 4}">{name}{empty}</text>')
    return "\n".join(out) + "\n</svg>"


# ---------------------------------------------------------------- HTML page

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1f2328;background:#f6f8fa;margin:0}
header,main,footer{max-width:1120px;margin:0 auto;padding:0 24px}header{padding-top:20px}footer{margin:24px auto;color:#8c959f;font-size:12px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:0 0 12px}h3{font-size:14px;margin:16px 0 6px}
a{color:#0969da}summary{cursor:pointer;color:#59636e}.muted{color:#59636e}.combo{margin:6px 0 12px}.combo strong{margin-right:8px}
.badge{display:inline-block;padding:1px 9px;border-radius:10px;font-size:12px;font-weight:600;margin-right:4px}
.passed{background:#dafbe1;color:#116329}.failed,.error{background:#ffebe9;color:#a40e26}.skipped,.notrun{background:#eaeef2;color:#59636e}
table{border-collapse:collapse;background:#fff;margin:8px 0 16px}th,td{border:1px solid #d0d7de;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td small{display:block;color:#59636e;font-size:11px}tr.failing td:first-child{box-shadow:inset 4px 0 #cf222e}.why{color:#a40e26;font-size:12px;max-width:440px}
section.spec{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:16px 20px;margin:16px 0}
section.failing{border-color:#cf222e;border-left-width:6px}.top{display:flex;flex-wrap:wrap;gap:8px 24px;align-items:flex-start}.side{flex:1;min-width:280px}
.reason{background:#ffebe9;border-radius:6px;padding:8px 12px;margin:0 0 8px;color:#82071e;white-space:pre-wrap;overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0 0 8px}dt{color:#59636e}dd{margin:0;overflow-wrap:anywhere}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;overflow:auto;max-height:320px;font-size:12px;white-space:pre-wrap}
svg.curve{font-size:11px;fill:#59636e;max-width:100%;height:auto}svg .axis{font-size:12px}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _anchor(spec_id: str) -> str:
    # Spec ids are already URL-safe; quoting keeps anything else from breaking the id or the href.
    return "spec-" + quote(spec_id, safe="")


def _href(path: str, base_dir: Path | None) -> str:
    """Relative to the page's folder when under it, so a moved or downloaded run directory keeps working links."""
    target = Path(os.path.abspath(path))
    if base_dir is not None:
        try:
            return quote(target.relative_to(os.path.abspath(base_dir)).as_posix())
        except ValueError:
            pass
    return target.as_uri()


def _badge(outcome: str | None, text: str | None = None) -> str:
    return f'<span class="badge {outcome if outcome in EMOJI else "notrun"}">{_e(text or outcome or "not run")}</span>'


def _header(documents: list[dict], titles: list[str]) -> str:
    combos = []
    for title, d in zip(titles, documents):
        devices = d.get("devices") if isinstance(d.get("devices"), dict) else {}
        meta = [f"run {d['run_dir']}" if d.get("run_dir") else "", str(d.get("created") or ""), f"tier {d['tier']}" if d.get("tier") else "",
                "devices " + ", ".join(map(str, devices["ids"])) if isinstance(devices.get("ids"), list) else ""]
        badges = "".join(_badge(k, f"{n} {k}") for k, n in _totals(d).items())
        badges += _badge("error", "interrupted") if d.get("interrupted") else ""
        combos.append(f'<div class="combo"><strong>{_e(title)}</strong>{badges}<div class="muted">{_e(" · ".join(filter(None, meta)))}</div></div>')
    return f'<header id="top"><h1>trainspec report</h1>{"".join(combos)}</header>'


def _num_td(text: str, note: str | None = None) -> str:
    return f'<td class="num">{_e(text)}{f"<small>{_e(note)}</small>" if note else ""}</td>'


def _table(rows: list[Row], titles: list[str], with_ppl: bool) -> str:
    """The at-a-glance table: failing specs on top with their reason, outcome cells coloured, Δ vs first under each value."""
    columns = ["outcome", "final loss"] + (["ppl"] if with_ppl else []) + ["time"]
    if len(titles) > 1:
        head = "<tr><th rowspan=2>spec</th>" + "".join(f"<th colspan={len(columns)}>{_e(t)}</th>" for t in titles) + "</tr><tr>"
    else:
        head = "<tr><th>spec</th>"
    head += "".join(f"<th>{c}</th>" for c in columns) * len(titles) + "</tr>"
    body = []
    for row in rows:
        why = next((c.reason for c in row.cells if c.outcome in FAILING and c.reason), "")
        tds = [f'<td><a href="#{_anchor(row.spec_id)}">{_e(row.spec_id)}</a>' + (f'<div class="why">{_e(_clip(why, 200))}</div>' if why else "") + "</td>"]
        for cell in row.cells:
            tds.append(f'<td class="{cell.outcome or "notrun"}">{_e(cell.outcome or "not run")}</td>')
            if cell.outcome is None:
                tds.append(f"<td colspan={len(columns) - 1}></td>")
                continue
            tds.append(_num_td(_fmt(cell.final_loss), None if cell.loss_delta is None else f"Δ {_signed(cell.loss_delta)}"))
            if with_ppl:
                tds.append(_num_td(_fmt(cell.perplexity), None if cell.perplexity_delta is None else f"Δ {_signed(cell.perplexity_delta)}"))
            tds.append(_num_td(_duration(cell.duration), None if cell.duration_change is None else _percent(cell.duration_change)))
        body.append(f'<tr{" class=failing" if row.failing else ""}>{"".join(tds)}</tr>')
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def _facts(spec: dict, title: str | None) -> str:
    """Beside the curve: what happened and why, and the numbers a person asks first."""
    outcome = _outcome(spec)
    devices = ", ".join(map(str, spec["devices"])) if isinstance(spec.get("devices"), list) else ""
    facts = [("time", _duration(_num(spec.get("duration")))), ("final loss", _fmt(_num(spec.get("final_loss")))),
             ("perplexity", _fmt(_num(spec.get("perplexity"))) if spec.get("perplexity") is not None else ""),
             ("steps logged", spec.get("steps_logged")), ("devices", devices + (f" ({spec['device_kind']})" if spec.get("device_kind") else "")),
             ("placement", spec.get("placement")),
             ("exit code", spec.get("exit_code")), ("tier", spec.get("tier")), ("spec file", spec.get("file"))]
    out = [f"<h3>{_badge(outcome)} {_e(title)}</h3>" if title else ""]
    out.append(f'<p class="reason">{_e(spec["reason"])}</p>' if spec.get("reason") else "")
    out.append("<dl>" + "".join(f"<dt>{k}</dt><dd>{_e(v)}</dd>" for k, v in facts if v not in (None, "")) + "</dl>")
    return "".join(out)


def _details(spec: dict, title: str | None, base_dir: Path | None) -> str:
    """Below the curve: the evidence, in the order a person debugging the spec needs it."""
    out = [f"<h3>{_e(title)}</h3>" if title else ""]
    checks = _items(spec.get("checks"), dict)
    bad = [c for c in checks if not c.get("passed")]
    if bad:
        cells = "".join(f'<tr><td class="{"failed" if c.get("severity", "fail") == "fail" else "skipped"}">{_e(c.get("name", "?"))}</td>'
                        f'<td>{_e(c.get("expected", ""))}</td><td>{_e(c.get("found", ""))}</td></tr>' for c in bad)
        out.append(f"<table><thead><tr><th>failed check</th><th>expected</th><th>found</th></tr></thead><tbody>{cells}</tbody></table>")
    if checks:
        out.append(f'<p class="muted">{len(checks) - len(bad)} of {len(checks)} checks passed</p>')
    items = [f"<li>regression: {_e(_regression_text(r))}</li>" for r in _items(spec.get("regressions"), dict)]
    items += [f"<li>warning: {_e(w)}</li>" for w in _items(spec.get("warnings"), str)]
    out.append(f"<ul>{''.join(items)}</ul>" if items else "")
    if inference := _items(spec.get("inference"), dict):
        cells = "".join(f'<tr><td>{_e(i.get("prompt", ""))}</td><td>{_e(i.get("text", ""))}</td>'
                        f'<td class="num">{_fmt(_num(i.get("perplexity")))}</td></tr>' for i in inference)
        out.append(f"<table><thead><tr><th>prompt</th><th>completion</th><th>perplexity</th></tr></thead><tbody>{cells}</tbody></table>")
    if str(spec.get("stderr_tail") or "").strip():
        opened = " open" if _outcome(spec) in FAILING else ""
        out.append(f'<details{opened}><summary>stderr (last lines)</summary><pre>{_e(spec["stderr_tail"])}</pre></details>')
    if isinstance(spec.get("command"), list) and spec["command"]:
        out.append(f"<details><summary>command</summary><pre>{_e(shlex.join(map(str, spec['command'])))}</pre></details>")
    links = {k: v for k, v in spec.get("paths").items() if isinstance(v, str) and v} if isinstance(spec.get("paths"), dict) else {}
    links.update({"output dir": spec["output_dir"]} if isinstance(spec.get("output_dir"), str) and spec["output_dir"] else {})
    if links:
        out.append('<p class="muted">files: ' + " · ".join(f'<a href="{_e(_href(p, base_dir))}">{_e(name)}</a>' for name, p in links.items()) + "</p>")
    return "".join(out)


def _section(row: Row, documents: list[dict], titles: list[str], base_dir: Path | None) -> str:
    specs = [next((s for s in _specs(d) if str(s["id"]) == row.spec_id), None) for d in documents]
    ran = [(t if len(documents) > 1 else None, s) for t, s in zip(titles, specs) if s is not None]
    worst = next((c.outcome for c in row.cells if c.outcome in FAILING), next((c.outcome for c in row.cells if c.outcome), None))
    curves = [s.get("loss_curve") if s and isinstance(s.get("loss_curve"), list) else [] for s in specs]
    svg = loss_curve_svg([(t if c else f"{t} ({'no loss logged' if s else 'not run'})", c) for t, s, c in zip(titles, specs, curves)])
    parts = [f'<h2>{_badge(worst)} {_e(row.spec_id)} <a class="muted" href="#top" title="back to the table">↑</a></h2>',
             f'<div class="top">{svg or "<p class=muted>no finite loss logged</p>"}<div class="side">{"".join(_facts(s, t) for t, s in ran)}</div></div>']
    parts += [_details(s, t, base_dir) for t, s in ran]
    return f'<section id="{_anchor(row.spec_id)}" class="spec{" failing" if row.failing else ""}">{"".join(parts)}</section>'


def render_html(documents: list[dict], *, base_dir: Path | None = None) -> str:
    """A complete offline page: header with totals, the table, then one section per spec (failing first)."""
    titles = _titles(documents)
    rows = sorted(comparison_rows(documents), key=lambda row: not row.failing)
    with_ppl = any(c.perplexity is not None for row in rows for c in row.cells)
    body = [_header(documents, titles), "<main>", _table(rows, titles, with_ppl) if rows else '<p class="muted">no specs ran</p>']
    body += [_section(row, documents, titles, base_dir) for row in rows]
    body.append("</main><footer>written by trainspec from results.json</footer>")
    title = _e("trainspec · " + " vs ".join(titles))
    head = f'<meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{title}</title><style>{CSS}</style>'
    return f'<!doctype html>\n<html lang="en"><head>{head}</head>\n<body>\n' + "\n".join(body) + "\n</body></html>\n"


def write_run_report(run_dir: Path, document: dict) -> Path:
    """`run_dir/report.html`, replaced atomically so a reader never sees half a page."""
    path = run_dir / "report.html"
    atomic_write_text(path, render_html([document], base_dir=run_dir))
    return path
