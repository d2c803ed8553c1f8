"""Commit -> receipt latency at steady rates (both queues), and isolation at idle: one healthy
endpoint's latency alone and beside each kind of endpoint that cannot take its work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchlib import courier, pgq
from benchlib.courier import pct
from benchlib.measures import Bench
from benchlib.procs import CpuMeter, MachineMeter, Watched
from benchlib.servers import database_name
from benchlib.sizes import COST_RATE, IDLE_RATE, phase_name
from pgcourier import ops


def summary(lat: list[float]) -> dict[str, Any]:
    return {
        "events": len(lat),
        "p50_ms": pct(lat, 50) * 1000,
        "p90_ms": pct(lat, 90) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        "max_ms": lat[-1] * 1000,
        "samples_ms": [x * 1000 for x in lat],
    }


async def phases(
    bench: Bench,
    dsn: str,
    plan: tuple[tuple[int, float], ...],
    statement: Callable[[float], str],
    prefix: str,
    process: Watched,
) -> None:
    for rate, seconds in plan:
        await asyncio.sleep(0.5)  # idle again after the previous phase
        await bench.receiver.reset("latency")
        n = int(rate * seconds)
        if rate != COST_RATE:
            await courier.produce_at_rate(dsn, rate, n, statement)
            await bench.receiver.wait_count(n, timeout=120)
            bench.results[prefix + phase_name(rate)] = summary(await bench.receiver.latencies())
            continue
        # What a steady trickle costs (most deployments' load, unlike a drain): the queue's
        # process and its Postgres backends, the producers' backends left out.
        producers: list[int] = []
        meter = CpuMeter(await bench.conn(dsn), database_name(dsn), producers)
        await meter.start()
        cpu0, machine = process.cpu_seconds(), MachineMeter()
        await courier.produce_at_rate(dsn, rate, n, statement, producers)
        await bench.receiver.wait_count(n, timeout=120)
        machine.stop()
        own = process.cpu_seconds() - cpu0
        pg = await meter.stop()
        await meter.conn.close()
        result = summary(await bench.receiver.latencies())
        result["cpu_s_per_1000"] = (own + pg["backends"]) / n * 1000
        result["process_cpu_s_per_1000"] = own / n * 1000
        result["backends_cpu_s_per_1000"] = pg["backends"] / n * 1000
        result["machine_cpu_s_per_1000"] = machine.busy / n * 1000
        bench.results[prefix + phase_name(rate)] = result


async def latency(bench: Bench) -> None:
    conn = await bench.conn()
    try:
        await courier.reset_tables(conn)
        await courier.add_endpoints(conn, bench.receiver.base, 1)
        async with bench.relay() as relay:
            await courier.wait_relay_idle(conn)
            await phases(
                bench, bench.dsn, bench.sizes.latency_phases, courier.latency_statement, "", relay
            )
            relay.check_alive("the relay")
    finally:
        await conn.close()
    conn = await bench.conn(bench.pgq_dsn)
    try:
        await pgq.reset(conn)
        async with bench.consumer() as consumer:
            await bench.pgq_ready(conn, consumer)
            await phases(
                bench,
                bench.pgq_dsn,
                bench.sizes.pgq_latency_phases,
                pgq.latency_statement,
                "pgqueuer ",
                consumer,
            )
            consumer.check_alive("PgQueuer's consumer")
    finally:
        await conn.close()


# -- isolation at idle (issue 10.5) -------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    """An endpoint that cannot take its work, and how to tell it has reached that state."""

    path: str  # receiver path (see benchlib.receiver)
    ready: str  # SQL, true once the state is reached; {id} is the hostile endpoint's id
    options: tuple[tuple[str, Any], ...] = ()
    ordering_key: str | None = None
    relay_env: tuple[tuple[str, str], ...] = ()
    settle: float = 0.5  # seconds after ``ready``, before measuring


HOSTILE: dict[str, Hostile] = {
    # 2 s per request, its max_in_flight full, the rest of its backlog waiting.
    # (Its attempts are recorded only when they end: a relay registered, and a second, will do.)
    "slow": Hostile("slow", "SELECT EXISTS (SELECT 1 FROM courier.relays)", settle=1.0),
    # Answers at once, but allowed one request a second: its backlog waits for tokens.
    "rate_limited": Hostile(
        "quiet",
        "SELECT EXISTS (SELECT 1 FROM courier.delivery_history"
        " WHERE endpoint_id = '{id}' AND status = 'delivered')",
        options=(("rate_limit", 1.0),),
    ),
    # 429 with Retry-After: 3600 pauses the whole endpoint.
    "retry_after": Hostile(
        "retry", "SELECT paused_until > now() FROM courier.endpoints WHERE id = '{id}'"
    ),
    # 500s until the circuit opens (5 consecutive failures by default).
    "circuit_open": Hostile(
        "fail", "SELECT circuit_state = 'open' FROM courier.endpoints WHERE id = '{id}'"
    ),
    # Disabled: its deliveries are created and held.
    "disabled": Hostile(
        "quiet",
        "SELECT NOT EXISTS (SELECT 1 FROM courier.outbox WHERE fanned_out_at IS NULL)",
        options=(("enabled", False),),
    ),
    # Every event on one ordering key whose first delivery fails: the rest wait behind it.
    # The circuit is kept closed so that the key, not the circuit, holds the backlog back.
    "ordering_key": Hostile(
        "fail",
        "SELECT EXISTS (SELECT 1 FROM courier.queue WHERE endpoint_id = '{id}' AND attempts > 0)",
        ordering_key="bench-key",
        relay_env=(("PGCOURIER_CIRCUIT_FAILURES", "10000"),),
    ),
}


async def _spaced(bench: Bench) -> list[float]:
    """The healthy endpoint's latencies, events 20 ms apart."""
    await bench.receiver.reset("latency")
    n = int(IDLE_RATE * bench.sizes.isolation_seconds)
    await courier.produce_at_rate(bench.dsn, IDLE_RATE, n, courier.latency_statement)
    await bench.receiver.wait_count(n, timeout=120)
    return await bench.receiver.latencies()


async def _case(bench: Bench, name: str, hostile: Hostile) -> tuple[list[float], list[float]]:
    """The healthy endpoint's latencies alone, then beside ``hostile``: the same fresh relay
    and tables, back to back, so that the pair is compared under the same machine load. "Alone"
    has the hostile endpoint registered but with nothing to deliver."""
    conn = await bench.conn()
    try:
        await courier.reset_tables(conn)
        await ops.create_endpoint(
            conn, url=f"{bench.receiver.base}/hook/0", event_types=["bench.latency"]
        )
        ep = await ops.create_endpoint(
            conn,
            url=f"{bench.receiver.base}/{hostile.path}/1",
            event_types=["bench.hostile"],
            **dict(hostile.options),
        )
        async with bench.relay(**dict(hostile.relay_env)) as relay:
            await courier.wait_relay_idle(conn)
            alone = await _spaced(bench)
            await courier.enqueue_many(
                conn, bench.sizes.hostile_backlog, "bench.hostile", hostile.ordering_key
            )
            await courier.wait_until(conn, hostile.ready.format(id=ep["id"]), f"{name} state")
            await asyncio.sleep(hostile.settle)  # the state settles; nothing healthy is due
            beside = await _spaced(bench)
            relay.check_alive("the relay")
            return alone, beside
    finally:
        await conn.close()


async def isolation(bench: Bench) -> None:
    result: dict[str, Any] = {}
    for name, hostile in HOSTILE.items():
        alone, beside = await _case(bench, name, hostile)
        result[f"{name}_alone_p50_ms"] = pct(alone, 50) * 1000
        result[f"{name}_alone_p99_ms"] = pct(alone, 99) * 1000
        result[f"{name}_p50_ms"] = pct(beside, 50) * 1000
        result[f"{name}_p99_ms"] = pct(beside, 99) * 1000
        result[f"{name}_p50_delta_ms"] = result[f"{name}_p50_ms"] - result[f"{name}_alone_p50_ms"]
    bench.results["isolation"] = result
