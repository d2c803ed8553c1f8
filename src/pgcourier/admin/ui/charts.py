"""Charts as inline SVG, drawn on the server: no JavaScript library, nothing to download.

Pure functions of the counts they are given, so they are unit-tested without a browser. Every
piece of text is escaped, although today all of it is numbers and fixed words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

# Outcomes stacked bottom to top: what went through first, the worst on top where it shows.
OUTCOMES = (("delivered", "delivered"), ("retried", "retried"), ("dead", "dead"))


@dataclass(frozen=True)
class Bar:
    """One minute: its start (UTC) and the count of each outcome."""

    minute: datetime
    counts: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.get(key, 0) for key, _ in OUTCOMES)


def minute_buckets(rows: Sequence[Mapping[str, Any]], *, end: datetime, span: int) -> list[Bar]:
    """``span`` bars, one per minute up to the minute of ``end``, zero where ``rows`` (each with
    ``minute`` and a count per outcome) has nothing; rows outside the span are ignored."""
    last = end.replace(second=0, microsecond=0)
    first = last - timedelta(minutes=span - 1)
    by_minute = {row["minute"]: row for row in rows}
    bars = []
    for i in range(span):
        minute = first + timedelta(minutes=i)
        row = by_minute.get(minute, {})
        bars.append(Bar(minute, {key: int(row.get(key) or 0) for key, _ in OUTCOMES}))
    return bars


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50... that is at least ``value`` (an axis' top)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def stacked_minutes(
    bars: Sequence[Bar], *, width: int = 720, height: int = 170, title: str = "attempts per minute"
) -> Markup:
    """A stacked bar chart of ``bars`` (oldest first) with a legend, a y axis from 0 to a round
    top, and relative minute marks on the x axis (so that it reads the same in every zone).
    Each bar's tooltip (SVG ``<title>``) gives its minute in UTC and its counts."""
    left, right, top, bottom = 40, 8, 24, 20
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = nice_ceiling(max((b.total for b in bars), default=0) or 1)
    slot = plot_w / max(len(bars), 1)
    gap = min(2.0, slot / 4)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    # Legend, top left.
    x: float = left
    for key, label in OUTCOMES:
        parts.append(f'<rect class="bar-{key} key" x="{x}" y="6" width="10" height="10"/>')
        parts.append(f'<text class="legend" x="{x + 14}" y="15">{escape(label)}</text>')
        x += 24 + 7 * len(label)
    # Axis and grid: 0, half and top.
    for fraction in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - fraction)
        value = peak * fraction
        label = f"{value:g}"
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y}" y2="{y}"/>')
        parts.append(
            f'<text class="axis" x="{left - 4}" y="{y + 4}" text-anchor="end">{label}</text>'
        )
    for i, bar in enumerate(bars):
        x0 = left + i * slot + gap / 2
        y = float(top + plot_h)
        counts = ", ".join(f"{bar.counts.get(k, 0)} {label}" for k, label in OUTCOMES)
        tip = f"{bar.minute:%Y-%m-%d %H:%M} UTC: {counts}"
        parts.append(f"<g><title>{escape(tip)}</title>")
        # An invisible full-height target so that even an empty minute has a tooltip.
        parts.append(
            f'<rect class="hit" x="{x0:.2f}" y="{top}" width="{slot - gap:.2f}" height="{plot_h}"/>'
        )
        for key, _ in OUTCOMES:
            n = bar.counts.get(key, 0)
            if n <= 0:
                continue
            h = plot_h * n / peak
            y -= h
            parts.append(
                f'<rect class="bar-{key}" x="{x0:.2f}" y="{y:.2f}" '
                f'width="{slot - gap:.2f}" height="{h:.2f}"/>'
            )
        parts.append("</g>")
    # Minute marks relative to now, every quarter of the span.
    span = len(bars)
    for quarter in range(5):
        ago = span - span * quarter // 4
        x = left + plot_w * quarter / 4
        label = "now" if quarter == 4 else f"-{ago} min"
        anchor = "start" if quarter == 0 else "end" if quarter == 4 else "middle"
        parts.append(
            f'<text class="axis" x="{x:.2f}" y="{height - 4}" text-anchor="{anchor}">{label}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
