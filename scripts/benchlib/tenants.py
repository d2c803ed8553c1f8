"""Tenant isolation (issue 13): one tenant's flood beside another tenant's steady trickle.

Tenant "steady" has one endpoint and produces TENANT_RATE events a second, one per transaction;
its commit -> receipt latency is measured alone, then beside tenant "flood", which has just
enqueued ``tenant_backlog`` events (50,000 in a full run) for an endpoint of its own. Both
endpoints take every ``bench.*`` type: only the tenant keeps each one's events apart, so the
measurement also checks that the steady endpoint receives nothing of the flood (the receiver
counts and times only /hook, where the steady endpoint is; the flood goes to /quiet).

Two windows beside the flood:
* ``fanout``: the steady tenant produces right after the flood is committed, while the relay is
  still fanning the flood out. Fan-out takes the outbox in commit order, whatever the tenant, so
  these events wait behind the flood's: this figure is how long (issue 13 does not ask for it;
  it is shown so that nobody reads the queued figure as the whole story).
* ``beside`` (the issue's figure): once the flood is fanned out, i.e. 50,000 events queued for its
  endpoint, which answers at once, so the relay is busy draining it throughout; how much was
  still queued when the window closed is reported (``flood_queued_at_end``).
"""

from __future__ import annotations

from typing import Any

from benchlib import courier
from benchlib.courier import pct
from benchlib.measures import Bench
from pgcourier import ops

TENANT_RATE = 20  # events/s of the steady tenant (issue 13)


def steady_statement(t: float) -> str:
    """One steady-tenant event per transaction, as latency_statement, with its tenant."""
    return (
        f"BEGIN; SELECT courier.enqueue('bench.latency', '{{\"t\": {t!r}}}'::jsonb,"
        " tenant => 'steady'); COMMIT"
    )


async def _steady(bench: Bench) -> list[float]:
    await bench.receiver.reset("latency")
    n = int(TENANT_RATE * bench.sizes.tenant_seconds)
    await courier.produce_at_rate(bench.dsn, TENANT_RATE, n, steady_statement)
    await bench.receiver.wait_count(n, timeout=300)
    latencies = await bench.receiver.latencies()
    if len(latencies) != n:  # another tenant's event reached the steady endpoint
        raise AssertionError(f"the steady endpoint received {len(latencies)} events, sent {n}")
    return latencies


async def tenants(bench: Bench) -> None:
    conn = await bench.conn()
    try:
        await courier.reset_tables(conn)
        await ops.create_endpoint(
            conn, url=f"{bench.receiver.base}/hook/0", event_types=["bench.*"], tenant="steady"
        )
        await ops.create_endpoint(
            conn, url=f"{bench.receiver.base}/quiet/1", event_types=["bench.*"], tenant="flood"
        )
        async with bench.relay() as relay:
            await courier.wait_relay_idle(conn)
            alone = await _steady(bench)
            await conn.execute(
                "SELECT courier.enqueue('bench.flood', jsonb_build_object('i', i, 'pad',"
                " repeat('x', 64)), tenant => 'flood') FROM generate_series(1, $1) AS i",
                bench.sizes.tenant_backlog,
            )
            during_fanout = await _steady(bench)
            await courier.wait_until(
                conn,
                "SELECT NOT EXISTS (SELECT 1 FROM courier.outbox WHERE fanned_out_at IS NULL)",
                "the flood's fan-out",
                timeout=120,
            )
            queued_at_start = await conn.fetchval("SELECT count(*) FROM courier.queue")
            beside = await _steady(bench)
            queued_at_end = await conn.fetchval("SELECT count(*) FROM courier.queue")
            relay.check_alive("the relay")
    finally:
        await conn.close()
    result: dict[str, Any] = {
        "flood_events": bench.sizes.tenant_backlog,
        "flood_queued_at_start": int(queued_at_start),
        "flood_queued_at_end": int(queued_at_end),
        "steady_events_per_s": TENANT_RATE,
        "alone_p50_ms": pct(alone, 50) * 1000,
        "alone_p99_ms": pct(alone, 99) * 1000,
        "beside_p50_ms": pct(beside, 50) * 1000,
        "beside_p99_ms": pct(beside, 99) * 1000,
        "fanout_p50_ms": pct(during_fanout, 50) * 1000,
        "fanout_max_ms": during_fanout[-1] * 1000,
    }
    result["p50_delta_ms"] = result["beside_p50_ms"] - result["alone_p50_ms"]
    bench.results["tenants"] = result
