"""The console's SVG charts, drawn from counts alone."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from pgcourier.admin.ui.charts import Bar, minute_buckets, nice_ceiling, stacked_minutes

END = datetime(2026, 11, 25, 16, 30, 42, tzinfo=UTC)


def test_buckets_cover_the_span_and_fill_empty_minutes_with_zero() -> None:
    rows = [
        {
            "minute": END.replace(second=0) - timedelta(minutes=2),
            "delivered": 4,
            "retried": 1,
            "dead": 0,
        },
        {"minute": END.replace(second=0), "delivered": 0, "retried": 0, "dead": 3},
        {"minute": END - timedelta(hours=3), "delivered": 99, "retried": 0, "dead": 0},
    ]
    bars = minute_buckets(rows, end=END, span=5)
    assert [b.minute.minute for b in bars] == [26, 27, 28, 29, 30]
    assert [b.total for b in bars] == [0, 0, 5, 0, 3]
    assert bars[2].counts == {"delivered": 4, "retried": 1, "dead": 0}


def test_axis_tops_are_round() -> None:
    assert [nice_ceiling(n) for n in (0, 1, 2, 3, 6, 11, 20, 21, 499, 501)] == [
        1,
        1,
        2,
        5,
        10,
        20,
        20,
        50,
        500,
        1000,
    ]


def _heights(svg: str, outcome: str) -> list[float]:
    return [
        float(h)
        for h in re.findall(
            rf'class="bar-{outcome}" x="[\d.]+" y="[\d.]+" '
            rf'width="[\d.]+" height="([\d.]+)"',
            svg,
        )
    ]


def test_bars_are_stacked_in_proportion_to_their_counts() -> None:
    minute = END.replace(second=0)
    bars = [
        Bar(minute - timedelta(minutes=1), {"delivered": 10, "retried": 0, "dead": 0}),
        Bar(minute, {"delivered": 5, "retried": 3, "dead": 2}),
    ]
    svg = str(stacked_minutes(bars, width=240, height=144))
    plot = 144 - 24 - 20  # height less the top and bottom margins
    assert _heights(svg, "delivered") == [plot, plot / 2]
    assert _heights(svg, "retried") == [plot * 3 / 10]
    assert _heights(svg, "dead") == [plot * 2 / 10]
    assert ">10</text>" in svg  # the axis top
    assert svg.count("<g>") == 2  # one group, with its tooltip, per minute
    assert "2026-11-25 16:30 UTC: 5 delivered, 3 retried, 2 dead" in svg


def test_an_empty_hour_draws_an_empty_chart() -> None:
    svg = str(stacked_minutes(minute_buckets([], end=END, span=60)))
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert _heights(svg, "delivered") == []
    assert svg.count("<title>") == 61
    assert "-60 min" in svg
    assert ">now<" in svg


def test_titles_are_escaped() -> None:
    svg = str(stacked_minutes([], title='<b>"x"</b>'))
    assert "<b>" not in svg
    assert "&lt;b&gt;" in svg
