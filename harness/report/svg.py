"""Inline SVG line charts for the HTML report: the loss curve of a spec across runs or stages, and its other metrics.

Standard library only, so the page opens from a CI artifact with no network.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Colour-blind-safe (Okabe–Ito) and no red, which the page keeps for failures.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#7f6b00")
BASELINE_COLOUR = "#6e7781"
BOUND_COLOUR = "#cf222e"
Points = Sequence[Sequence[float | None]]
Scale = Callable[[float], float]


@dataclass(frozen=True)
class Mark:
    """A vertical line at a step (a stage that starts, a planned interrupt), labelled; `kind` is its CSS class."""

    step: float
    label: str
    kind: str = "mark"


@dataclass(frozen=True)
class Bound:
    """A horizontal line at a value a check holds the curve to (`loss.final_max 1.5`)."""

    value: float
    label: str


def _plottable(value: object) -> float | None:
    """A finite number or None; astronomical values count as infinite: no axis can show them next to a loss of 1."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or abs(value) >= 1e100
    ):
        return None
    return float(value)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round values (1, 2 or 5 × 10^k apart) covering [low, high]."""
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _log_ticks(low: float, high: float) -> list[float]:
    """Exponents (log10) of the powers of ten in [low, high], with 2 and 5 between when there are few."""
    decades = range(math.floor(low), math.ceil(high) + 1)
    marks = (1, 2, 5) if len(decades) <= 3 else (1,)
    return [e + math.log10(m) for e in decades for m in marks if low <= e + math.log10(m) <= high]


def _span(values: list[float], pad: float, half: float) -> tuple[float, float]:
    """A range around the values; a single value gets `half` either side so it sits mid-axis."""
    low, high = min(values), max(values)
    if high - low < 1e-12 * max(1.0, abs(high)):
        return low - half, high + half
    return low - (high - low) * pad, high + (high - low) * pad


def spans_decades(values: list[float]) -> bool:
    """A log axis pays off: every value positive and the largest more than ten times the smallest."""
    return bool(values) and min(values) > 0 and max(values) > 10 * min(values)


def curve_svg(
    series: Sequence[tuple[str, Points]],
    *,
    ylabel: str = "loss",
    xlabel: str = "step",
    baseline: Points = (),
    width: int = 560,
    height: int = 220,
    marks: Sequence[Mark] = (),
    bounds: Sequence[Bound] = (),
) -> str:
    """Inline SVG with one line per (label, [[step, value], ...]), a legend below when several; "" when no point
    has a finite value.

    A missing or non-finite value breaks the line instead of being bridged, so a NaN stretch
    shows as a gap (marked on the x axis) rather than as a plausible-looking segment. The y
    axis turns logarithmic when the values span more than a decade. `baseline`, when given,
    is drawn first in grey, under the runs. `marks` are vertical lines at steps (stage boundaries,
    an interrupt), `bounds` horizontal lines at the values checks hold the curve to; a bound far
    off the values is named under the chart instead of squashing the curve.
    """
    named = [("baseline", baseline)] * bool(baseline) + list(series)
    curves = [[(_plottable(p[0]), _plottable(p[1])) for p in points if len(p) >= 2] for _, points in named]
    if not any(s is not None and v is not None for curve in curves for s, v in curve):
        return ""
    log = spans_decades([v for curve in curves for _, v in curve if v is not None])
    curves = [[(s, math.log10(v) if log and v is not None else v) for s, v in curve] for curve in curves]
    finite = [v for curve in curves for s, v in curve if s is not None and v is not None]
    shown, off = _near_bounds(bounds, finite, log)
    finite += [value for value, _ in shown]
    legend = 16 * len(named) if len(named) > 1 else 0
    left, right, top, bottom = 56, 14, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    # Steps without a finite value still widen the x axis: a run that diverged at step 10 of 60
    # must look like one, not like a lone point.
    x0, x1 = _span([s for curve in curves for s, _ in curve if s is not None] + [m.step for m in marks], 0.0, 1.0)
    y0, y1 = _span(finite, 0.05, abs(finite[0]) * 0.05 or 1.0)

    def x(step: float) -> float:
        return left + (step - x0) / (x1 - x0) * plot_w

    def y(value: float) -> float:
        return top + (y1 - value) / (y1 - y0) * plot_h

    size = f'viewBox="0 0 {width} {height + legend}" width="{width}" height="{height + legend}"'
    label = html.escape(ylabel) + (" (log scale)" if log else "")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" {size} role="img" aria-label="{label} curve" class="curve">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#d0d7de"/>',
    ]
    for tick in _log_ticks(y0, y1) if log else _ticks(y0, y1, 5):
        if y0 <= tick <= y1:
            out.append(
                f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eef1f4"/>'
                f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{10**tick if log else tick:.4g}</text>'
            )
    for tick in _ticks(x0, x1, 6 if width > 400 else 3):
        if x0 <= tick <= x1:
            out.append(
                f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" '
                'stroke="#8c959f"/>'
                f'<text x="{x(tick):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{tick:.6g}</text>'
            )
    out.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 30}" text-anchor="middle" class="axis">'
        f"{html.escape(xlabel)}</text>"
        f'<text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" transform="rotate(-90 12 '
        f'{top + plot_h / 2:.1f})" class="axis">{label}</text>'
    )
    if any(s is not None and v is None for curve in curves[bool(baseline) :] for s, v in curve):
        out.append(
            f'<text x="{left}" y="{top + plot_h + 30}" fill="#cf222e">| {html.escape(ylabel)} NaN or missing</text>'
        )
    out += _marks(marks, x, top, plot_h)
    out += _bounds(shown, off, left, plot_w, y, top + plot_h + 30)
    for index, ((name, _), curve) in enumerate(zip(named, curves, strict=True)):
        out += _line(curve, index - bool(baseline), html.escape(name), x, y, top + plot_h, html.escape(ylabel))
        if legend:
            colour, dash = _style(index - bool(baseline))
            ly = height + 16 * index + 4
            empty = f" (no finite {html.escape(ylabel)})" if curve and all(v is None for _, v in curve) else ""
            out.append(
                f'<line x1="{left}" x2="{left + 24}" y1="{ly}" y2="{ly}" stroke="{colour}" '
                f'stroke-width="3"{dash}/><text x="{left + 30}" '
                f'y="{ly + 4}">{html.escape(name)}{empty}</text>'
            )
    return "\n".join(out) + "\n</svg>"


def _style(index: int) -> tuple[str, str]:
    """Colour and dash of series `index` (-1: the baseline). Runs of one seed often coincide exactly; dashes let the
    first line show through."""
    if index < 0:
        return BASELINE_COLOUR, ' stroke-dasharray="2 3"'
    return PALETTE[index % len(PALETTE)], f' stroke-dasharray="{3 + 3 * index} 4"' if index else ""


def _line(
    curve: list[tuple[float | None, float | None]],
    index: int,
    name: str,
    x: Scale,
    y: Scale,
    axis_y: float,
    ylabel: str,
) -> list[str]:
    """The polylines (dots where a segment is one point) of one series, and red marks where its value is missing."""
    colour, dash = _style(index)
    out: list[str] = []
    segments: list[list[tuple[float, float]]] = [[]]
    for step, value in curve:
        if step is None:
            continue
        if value is None:
            segments.append([])
            if index >= 0:
                out.append(
                    f'<path d="M{x(step):.1f} {axis_y - 5}v10" stroke="#cf222e" '
                    f'stroke-width="2"><title>{name}: no finite {ylabel} at step {step:.6g}</title></path>'
                )
        else:
            segments[-1].append((x(step), y(value)))
    for segment in filter(None, segments):
        if len(segment) == 1:
            out.append(
                f'<circle cx="{segment[0][0]:.1f}" cy="{segment[0][1]:.1f}" r="3" '
                f'fill="{colour}"><title>{name}</title></circle>'
            )
        else:
            points = " ".join(f"{px:.1f},{py:.1f}" for px, py in segment)
            out.append(
                f'<polyline points="{points}" fill="none" stroke="{colour}" '
                f'stroke-width="{1.5 if index < 0 else 2}"{dash} '
                f'stroke-linejoin="round"><title>{name}</title></polyline>'
            )
    return out


def _near_bounds(bounds: Sequence[Bound], values: list[float], log: bool) -> tuple[list[tuple[float, str]], list[str]]:
    """The bounds drawn (value on the chart's axis, label) and those named only: a bound further from the
    values than their own spread would squash the curve into a line."""
    spread = (max(values) - min(values)) or abs(values[0]) or 1.0
    shown, off = [], []
    for bound in bounds:
        value = math.log10(bound.value) if log and bound.value > 0 else None if log else bound.value
        if value is not None and min(values) - spread <= value <= max(values) + spread:
            shown.append((value, bound.label))
        else:
            off.append(bound.label)
    return shown, off


def _marks(marks: Sequence[Mark], x: Scale, top: float, plot_h: float) -> list[str]:
    out = []
    for index, mark in enumerate(marks):
        label = html.escape(mark.label)
        # Marks a few steps apart (a resume that starts just before the interrupt): labels on rows of their own.
        row = top + 11 + 12 * (index % 3)
        out.append(
            f'<g class="{html.escape(mark.kind)}"><line x1="{x(mark.step):.1f}" x2="{x(mark.step):.1f}" y1="{top}"'
            f' y2="{top + plot_h}" stroke="#57606a" stroke-dasharray="4 3"/><text x="{x(mark.step) + 3:.1f}"'
            f' y="{row}">{label}</text><title>{label}</title></g>'
        )
    return out


def _bounds(
    shown: list[tuple[float, str]], off: list[str], left: float, plot_w: float, y: Scale, below: float
) -> list[str]:
    out = []
    for value, label in shown:
        text = html.escape(label)
        out.append(
            f'<g class="bound"><line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}"'
            f' stroke="{BOUND_COLOUR}" stroke-dasharray="6 3"/><text x="{left + plot_w - 4}" y="{y(value) - 3:.1f}"'
            f' text-anchor="end" fill="{BOUND_COLOUR}">{text}</text></g>'
        )
    if off:
        names = html.escape(", ".join(off))
        out.append(
            f'<text class="bound" x="{left + plot_w}" y="{below}" text-anchor="end" fill="{BOUND_COLOUR}">'
            f"{names} (off the chart)</text>"
        )
    return out
