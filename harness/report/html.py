"""The offline HTML report: totals per run, the spec × run table, then one section per spec with its curves.

One page, CSS and SVG inline, no script and no network, so it opens from a CI artifact.
"""

from __future__ import annotations

import html
import os
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness.atomic import atomic_write_text
from harness.records import RunDocument, SpecResult
from harness.report.charts import spec_charts
from harness.report.kinds import failures_by_kind, recovered
from harness.report.rows import (
    EMOJI,
    FAILING,
    Row,
    clip,
    comparison_rows,
    duration,
    fmt,
    percent,
    regression_text,
    titles,
    totals,
    with_sign,
)
from harness.report.schedule import ScheduleFigures
from harness.report.svg import Mark, curve_svg

# Per spec id: (metric, label, [[run number, value], ...]) over its past runs, from the run history.
Trends = dict[str, list[tuple[str, str, list[list[float | None]]]]]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1f2328;
background:#f6f8fa;margin:0}
header,main,footer{max-width:1120px;margin:0 auto;padding:0 24px}header{padding-top:20px}footer{margin:24px auto;
color:#8c959f;font-size:12px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:0 0 12px}h3{font-size:14px;margin:16px 0 6px}
a{color:#0969da}summary{cursor:pointer;color:#59636e}.muted{color:#59636e}.combo{margin:6px 0 12px}
.combo strong{margin-right:8px}
.badge{display:inline-block;padding:1px 9px;border-radius:10px;font-size:12px;font-weight:600;margin-right:4px}
.passed{background:#dafbe1;color:#116329}.failed,.error{background:#ffebe9;color:#a40e26}
.skipped,.notrun{background:#eaeef2;color:#59636e}
table{border-collapse:collapse;background:#fff;margin:8px 0 16px}th,td{border:1px solid #d0d7de;padding:4px 10px;
text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td small{display:block;color:#59636e;font-size:11px}tr.failing td:first-child{box-shadow:inset 4px 0 #cf222e}
.why{color:#a40e26;font-size:12px;max-width:440px}
section.spec{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:16px 20px;margin:16px 0}
section.failing{border-color:#cf222e;border-left-width:6px}.top{display:flex;flex-wrap:wrap;gap:8px 24px;
align-items:flex-start}.side{flex:1;min-width:280px}
.metrics{display:flex;flex-wrap:wrap;gap:4px 12px}
.reason{background:#ffebe9;border-radius:6px;padding:8px 12px;margin:0 0 8px;color:#82071e;white-space:pre-wrap;
overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0 0 8px}dt{color:#59636e}dd{margin:0;
overflow-wrap:anywhere}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;overflow:auto;max-height:320px;
font-size:12px;white-space:pre-wrap}
svg.curve{font-size:11px;fill:#59636e;max-width:100%;height:auto}svg .axis{font-size:12px}
svg .differs line{stroke:#cf222e}svg .differs text{fill:#cf222e}
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


def _history_notes(document: RunDocument) -> str:
    """What the run history said of this run (results.json's `history`): drift, new failures, flaky specs."""
    found = document.other.get("history")
    if not isinstance(found, dict):
        return ""
    quarantined = set(found.get("quarantined") or [])
    notes = [f"drift {d.get('spec')}: {d.get('text')}" for d in found.get("drift") or [] if isinstance(d, dict)]
    notes += [
        f"new failure {spec}: it passed the last time on the same code" for spec in found.get("new_failures") or []
    ]
    notes += [
        f"flaky {f.get('spec')}: {f.get('text')}" + (" (quarantined)" if f.get("spec") in quarantined else "")
        for f in found.get("flaky") or []
        if isinstance(f, dict)
    ]
    notes += [f"history not recorded: {found['warning']}"] if found.get("warning") else []
    return f'<div class="reason">{_e(chr(10).join(notes))}</div>' if notes else ""


def _header(documents: list[RunDocument], names: list[str]) -> str:
    combos = []
    for name, d in zip(names, documents, strict=True):
        ids = d.devices.get("ids")
        meta = [
            f"run {d.run_dir}" if d.run_dir else "",
            d.created,
            f"tier {d.tier}" if d.tier else "",
            "devices " + ", ".join(map(str, ids)) if isinstance(ids, list) and len(ids) <= 16 else "",
            ScheduleFigures.from_json(d.schedule).line() if d.schedule else "",
        ]
        badges = "".join(_badge(k, f"{n} {k}") for k, n in totals(d).items())
        badges += _badge("error", "interrupted") if d.interrupted else ""
        kinds = " · ".join(
            f"{_e(kind)}: " + ", ".join(f'<a href="#{_anchor(i)}">{_e(i)}</a>' for i in ids)
            for kind, ids in failures_by_kind(d.specs).items()
        )
        facts = _e(" · ".join(filter(None, meta)))
        combos.append(
            f'<div class="combo"><strong>{_e(name)}</strong>{badges}<div class="muted">{facts}</div>'
            + (f'<div class="kinds">failed by kind: {kinds}</div>' if kinds else "")
            + _history_notes(d)
            + "</div>"
        )
    return f'<header id="top"><h1>trainspec report</h1>{"".join(combos)}</header>'


def _num_td(text: str, note: str | None = None) -> str:
    return f'<td class="num">{_e(text)}{f"<small>{_e(note)}</small>" if note else ""}</td>'


def _table(rows: list[Row], names: list[str], with_ppl: bool) -> str:
    """The at-a-glance table: failing specs on top with their reason, outcome cells coloured, Δ vs first under each
    value."""
    columns = ["outcome", "final loss"] + (["ppl"] if with_ppl else []) + ["time"]
    if len(names) > 1:
        head = (
            "<tr><th rowspan=2>spec</th>"
            + "".join(f"<th colspan={len(columns)}>{_e(t)}</th>" for t in names)
            + "</tr><tr>"
        )
    else:
        head = "<tr><th>spec</th>"
    head += "".join(f"<th>{c}</th>" for c in columns) * len(names) + "</tr>"
    body = []
    for row in rows:
        why = next(
            (f"{c.kind}: {c.reason}" if c.kind else c.reason for c in row.cells if c.outcome in FAILING and c.reason),
            "",
        )
        tds = [
            f'<td><a href="#{_anchor(row.spec_id)}">{_e(row.spec_id)}</a>'
            + (f'<div class="why">{_e(clip(why, 200))}</div>' if why else "")
            + "</td>"
        ]
        for cell in row.cells:
            tds.append(f'<td class="{cell.outcome or "notrun"}">{_e(cell.outcome or "not run")}</td>')
            if cell.outcome is None:
                tds.append(f"<td colspan={len(columns) - 1}></td>")
                continue
            tds.append(
                _num_td(fmt(cell.final_loss), None if cell.loss_delta is None else f"Δ {with_sign(cell.loss_delta)}")
            )
            if with_ppl:
                tds.append(
                    _num_td(
                        fmt(cell.perplexity),
                        None if cell.perplexity_delta is None else f"Δ {with_sign(cell.perplexity_delta)}",
                    )
                )
            tds.append(
                _num_td(
                    duration(cell.duration), None if cell.duration_change is None else percent(cell.duration_change)
                )
            )
        body.append(f"<tr{' class=failing' if row.failing else ''}>{''.join(tds)}</tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def _facts(spec: SpecResult, title: str | None) -> str:
    """Beside the curve: what happened and why, and the numbers a person asks first."""
    facts: list[tuple[str, Any]] = [
        ("failure kind", f"{spec.failure_kind} ({spec.failure_evidence})" if spec.failure_kind else ""),
        ("retried", recovered(spec)),
        ("time", duration(spec.duration or None)),
        ("final loss", fmt(spec.final_loss)),
        ("perplexity", fmt(spec.perplexity) if spec.perplexity is not None else ""),
        ("steps logged", spec.steps_logged),
        ("devices", ", ".join(spec.devices) + (f" ({spec.device_kind})" if spec.device_kind else "")),
        ("peak GPU memory", ", ".join(f"{mib} MiB on {device}" for device, mib in spec.peak_gpu_memory.items())),
        ("placement", spec.placement),
        ("exit code", spec.exit_code),
        ("tier", spec.tier),
        ("spec file", spec.file),
    ]
    out = [f"<h3>{_badge(spec.outcome)} {_e(title)}</h3>" if title else ""]
    out.append(f'<p class="reason">{_e(spec.reason)}</p>' if spec.reason else "")
    out.append("<dl>" + "".join(f"<dt>{k}</dt><dd>{_e(v)}</dd>" for k, v in facts if v not in (None, "")) + "</dl>")
    return "".join(out)


def _details(spec: SpecResult, title: str | None, base_dir: Path | None) -> str:
    """Below the curve: the evidence, in the order a person debugging the spec needs it."""
    out = [f"<h3>{_e(title)}</h3>" if title else ""]
    bad = [c for c in spec.checks if not c["passed"]]
    if bad:
        cells = "".join(
            f'<tr><td class="{"failed" if c["severity"] == "fail" else "skipped"}">{_e(c["name"])}</td>'
            f"<td>{_e(c['expected'])}</td><td>{_e(c['found'])}</td></tr>"
            for c in bad
        )
        out.append(
            "<table><thead><tr><th>failed check</th><th>expected</th><th>found</th></tr></thead>"
            f"<tbody>{cells}</tbody></table>"
        )
    if spec.checks:
        out.append(f'<p class="muted">{len(spec.checks) - len(bad)} of {len(spec.checks)} checks passed</p>')
    items = [
        f"<li>attempt {a.get('attempt')}: {_e(a.get('outcome'))}"
        + (f" ({_e(a['failure_kind'])})" if a.get("failure_kind") else "")
        + (f" on {_e(', '.join(a['devices']))}" if a.get("devices") else "")
        + (f": {_e(a.get('reason'))}" if a.get("reason") else "")
        + "</li>"
        for a in spec.attempts
    ]
    items += [f"<li>regression: {_e(regression_text(r))}</li>" for r in spec.regressions]
    items += [f"<li>warning: {_e(w)}</li>" for w in spec.warnings]
    out.append(f"<ul>{''.join(items)}</ul>" if items else "")
    if spec.inference:
        cells = "".join(
            f'<tr><td>{_e(i["prompt"])}</td><td>{_e(i["text"])}</td><td class="num">{fmt(i["perplexity"])}</td></tr>'
            for i in spec.inference
        )
        out.append(
            f"<table><thead><tr><th>prompt</th><th>completion</th><th>perplexity</th></tr></thead><tbody>{cells}</tbody></table>"
        )
    if spec.stderr_tail.strip():
        opened = " open" if spec.outcome in FAILING else ""
        out.append(
            f"<details{opened}><summary>stderr (last lines)</summary><pre>{_e(spec.stderr_tail)}</pre></details>"
        )
    if spec.command:
        out.append(f"<details><summary>command</summary><pre>{_e(shlex.join(spec.command))}</pre></details>")
    links = {k: v for k, v in spec.paths.items() if v} | ({"output dir": spec.output_dir} if spec.output_dir else {})
    if links:
        out.append(
            '<p class="muted">files: '
            + " · ".join(f'<a href="{_e(_href(p, base_dir))}">{_e(name)}</a>' for name, p in links.items())
            + "</p>"
        )
    return "".join(out)


def _curve_of(record: SpecResult | None, metric: str) -> list[list[float | None]]:
    if record is None:
        return []
    return record.loss_curve if metric == "loss" else record.metric_curves.get(metric, [])


def _comparisons(spec: SpecResult, document: RunDocument) -> str:
    """Each comparison of the spec (parity, reproducible): the pair's curves on one chart, the first
    differing step marked, and what was found. Drawn on the declaring spec's section; its partner
    lists it in a line."""
    by_id = {s.id: s for s in document.specs}
    out = []
    for c in spec.parity:
        metric, partner = str(c.get("metric", "loss")), str(c.get("partner", ""))
        step = c.get("first_failing_step")
        found = c.get("reason") or (
            f"{c.get('steps_compared')} common steps compared, largest difference {fmt(c.get('max_abs_diff'))}"
            + (f"; first differing step {step:g}" if isinstance(step, (int, float)) else "")
        )
        outcome = {"passed": "passed", "failed": "failed"}.get(str(c.get("status")), "skipped")
        text = f"{c.get('kind')} of {c.get('spec')} with {partner}: {c.get('status')}; {found}"
        out.append(f'<p class="comparison">{_badge(outcome)} {_e(text)}</p>')
        if c.get("spec") != spec.id or c.get("kind") == "stage parity":
            continue
        marks = [Mark(step, f"first differing step {step:g}", "differs")] if isinstance(step, (int, float)) else []
        pair = [(spec.id, _curve_of(spec, metric)), (partner, _curve_of(by_id.get(partner), metric))]
        out.append(curve_svg(pair, ylabel=metric, marks=marks))
    return "".join(out)


def _section(
    row: Row, documents: list[RunDocument], names: list[str], base_dir: Path | None, trends: Trends | None = None
) -> str:
    specs = [next((s for s in d.specs if s.id == row.spec_id), None) for d in documents]
    ran = [(t if len(documents) > 1 else None, s) for t, s in zip(names, specs, strict=True) if s is not None]
    worst = next(
        (c.outcome for c in row.cells if c.outcome in FAILING), next((c.outcome for c in row.cells if c.outcome), None)
    )
    loss, metrics = spec_charts(specs, names)
    parts = [
        f'<h2>{_badge(worst)} {_e(row.spec_id)} <a class="muted" href="#top" title="back to the table">↑</a></h2>',
        f'<div class="top">{loss}<div class="side">{"".join(_facts(s, t) for t, s in ran)}</div></div>',
        metrics,
    ]
    if trends and (
        charts := [
            curve_svg([(label, points)], ylabel=m, xlabel="run") for m, label, points in trends.get(row.spec_id, [])
        ]
    ):
        parts.append(f'<h3>over its past runs</h3><div class="metrics">{"".join(charts)}</div>')
    parts += [_comparisons(s, d) for d, s in zip(documents, specs, strict=True) if s is not None]
    parts += [_details(s, t, base_dir) for t, s in ran]
    return (
        f'<section id="{_anchor(row.spec_id)}" '
        f'class="spec{" failing" if row.failing else ""}">{"".join(parts)}</section>'
    )


def render_html(
    documents: list[RunDocument],
    *,
    base_dir: Path | None = None,
    labels: list[str] | None = None,
    trends: Trends | None = None,
) -> str:
    """A complete offline page: header with totals, the table, then one section per spec (failing first).

    `labels` name the runs in order (default: their torch · transformers combination). `trends`: per spec id,
    (metric, label, [[run number, value], ...]) from the run history, drawn in the spec's section.
    """
    names = titles(documents, labels)
    rows = sorted(comparison_rows(documents), key=lambda row: not row.failing)
    with_ppl = any(c.perplexity is not None for row in rows for c in row.cells)
    body = [
        _header(documents, names),
        "<main>",
        _table(rows, names, with_ppl) if rows else '<p class="muted">no specs ran</p>',
    ]
    body += [_section(row, documents, names, base_dir, trends) for row in rows]
    body.append("</main><footer>written by trainspec from results.json</footer>")
    title = _e("trainspec · " + " vs ".join(names))
    head = (
        '<meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{title}</title><style>{CSS}</style>"
    )
    return f'<!doctype html>\n<html lang="en"><head>{head}</head>\n<body>\n' + "\n".join(body) + "\n</body></html>\n"


def write_run_report(run_dir: Path, document: RunDocument | dict[str, Any]) -> Path:
    """`run_dir/report.html`, replaced atomically so a reader never sees half a page.

    A plain results.json object is accepted too (checked through the same schema) for callers that hold one.
    """
    if not isinstance(document, RunDocument):
        document = RunDocument.from_json(document, str(run_dir / "results.json"))
    path = run_dir / "report.html"
    atomic_write_text(path, render_html([document], base_dir=run_dir))
    return path
