"""Small inline SVG charts for the run report: line charts over time and horizontal bars.

No plotting library is a runtime dependency, and the report must open with no network, so
charts are drawn here as plain SVG text (escaped, fixed size, readable without JavaScript).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
Point = tuple[float, float]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2, 5 × a power of ten apart)."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0]
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = [round(first, 10)]
    while ticks[-1] < high - step * 1e-9:  # the last tick is at or above `high`
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return f"{value:,.0f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.2g}" if abs(value) < 1 else f"{value:.1f}"


def _frame(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        'font-family="sans-serif" font-size="11">'
        f"<title>{escape(title)}</title>"
        f'<text x="{width / 2:.0f}" y="14" text-anchor="middle" font-size="13" '
        f'font-weight="bold">{escape(title)}</text>' + "".join(body) + "</svg>"
    )


def line_chart(
    series: Mapping[str, Sequence[Point]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 680,
    height: int = 260,
    y_min: float | None = 0.0,
    y_max: float | None = None,
) -> str:
    """One polyline per series over a shared x axis, with a legend."""
    points = [p for values in series.values() for p in values]
    left, right, top, bottom = 56, 130, 24, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    if not points:
        return _frame(
            width,
            height,
            title,
            [
                f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
                'fill="#777">no data</text>'
            ],
        )
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x_ticks = nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(min(ys) if y_min is None else y_min, max(ys) if y_max is None else y_max)
    x0, x1 = x_ticks[0], x_ticks[-1]
    y0, y1 = y_ticks[0], y_ticks[-1]

    def sx(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1.0) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - (y - y0) / ((y1 - y0) or 1.0) * plot_h

    body: list[str] = []
    for tick in y_ticks:
        y = sy(tick)
        body.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(tick)}</text>'
        )
    for tick in x_ticks:
        x = sx(tick)
        body.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" '
            f'stroke="#333"/><text x="{x:.1f}" y="{top + plot_h + 16}" '
            f'text-anchor="middle">{_fmt(tick)}</text>'
        )
    body.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#333"/>'
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text x="12" y="{top + plot_h / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + plot_h / 2:.0f})">{escape(y_label)}</text>'
    )
    for index, (name, values) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(values))
        if len(values) == 1:
            x, y = values[0]
            body.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>')
        elif values:
            body.append(
                f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.6"/>'
            )
        ly = top + 12 + 16 * index
        body.append(
            f'<rect x="{left + plot_w + 10}" y="{ly - 8}" width="10" height="10" '
            f'fill="{color}"/><text x="{left + plot_w + 24}" y="{ly + 1}">'
            f"{escape(name[:16])}</text>"
        )
    return _frame(width, height, title, body)


def bar_chart(
    bars: Sequence[tuple[str, float]],
    *,
    title: str,
    unit: str = "",
    width: int = 680,
    bar_height: int = 18,
) -> str:
    """Horizontal bars, one per (label, value), value written at the bar's end."""
    left, right, top = 170, 80, 24
    height = top + max(1, len(bars)) * (bar_height + 6) + 10
    if not bars:
        return _frame(
            width, height + 20, title, [f'<text x="{left}" y="{top + 14}" fill="#777">none</text>']
        )
    peak = max(value for _, value in bars) or 1.0
    plot_w = width - left - right
    body: list[str] = []
    for index, (label, value) in enumerate(bars):
        y = top + index * (bar_height + 6)
        w = max(1.0, value / peak * plot_w) if value > 0 else 0.0
        color = PALETTE[index % len(PALETTE)]
        body.append(
            f'<text x="{left - 6}" y="{y + bar_height - 5}" text-anchor="end">'
            f"{escape(label[:28])}</text>"
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_height}" fill="{color}"/>'
            f'<text x="{left + w + 4:.1f}" y="{y + bar_height - 5}">'
            f"{escape(_fmt(value) + unit)}</text>"
        )
    return _frame(width, height, title, body)
