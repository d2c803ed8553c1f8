"""The overview page: the last hour's deliveries, the queue, endpoints needing a look, relays."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from pgcourier import ops
from pgcourier.admin.ui.charts import OUTCOMES, minute_buckets, stacked_minutes
from pgcourier.admin.ui.render import connection, render

SPAN = 60


async def overview(request: web.Request) -> web.StreamResponse:
    async with connection(request) as conn:
        facts = await ops.console.overview(conn)
        rows = await ops.console.minutes(conn, span=SPAN)
    bars = minute_buckets(rows, end=datetime.now(UTC), span=SPAN)
    totals = {key: sum(b.counts[key] for b in bars) for key, _ in OUTCOMES}
    chart = stacked_minutes(
        bars, width=1180, height=200, title="Attempts per minute over the last hour, by outcome"
    )
    return render(request, "overview.html", {**facts, "chart": chart, "totals": totals})
