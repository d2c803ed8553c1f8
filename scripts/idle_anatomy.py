"""Where an idle event's commit -> receipt time goes (issue 11): the relay's path, step by step.

The benchmark's idle latency is measured from just before the producer's transaction (BEGIN,
courier.enqueue, COMMIT in one round trip) to the receiver reading the request. This script
walks the same path one step at a time, with nothing else running, so each step's share shows:

1. commit: the producer's round trip, with an idle relay row (the trigger flips it and notifies);
   on alternate events with synchronous_commit off (``commit_no_fsync``), to show the disk's part;
2. notify: from the commit's return to the NOTIFY reaching a listening connection;
3. claim: ``courier.claim`` of that one event as the relay runs it (fan-out included, on a
   session with synchronous_commit off), then the same split in two: ``courier.fan_out`` alone
   and a claim with nothing to fan out (on alternate events);
4. send: the relay's pyreqwest transport signing and POSTing it to the benchmark's receiver
   (and, for comparison, the aiohttp transport on alternate events, and a bare ``SELECT 1``
   round trip: the floor of any claim);
5. wake-up: a bare ``SELECT 1`` on a connection idle for the gap, against ``select_1`` on a busy
   one: what waking a sleeping process costs on this host, once per hop of the path (producer's
   backend, relay, claim backend, receiver).

and the receiver's own commit -> receipt figure for the same events. Run:
``python scripts/idle_anatomy.py [--postgres 18|16|15] [--dsn DSN] [-n 400]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).parent))

from benchlib import courier, servers
from benchlib.receiver import receiver_process

from pgcourier import db
from pgcourier.delivery import WebhookTransport, new_session
from pgcourier.delivery_reqwest import PinnedClients, ReqwestTransport
from pgcourier.netguard import parse_networks
from pgcourier.sealing import Unsealer
from pgcourier.store import _job

GAP = 0.02  # seconds between events, as the benchmark's idle phase
CLAIM = "SELECT * FROM courier.claim(64, 60, $1, $2, 10)"


async def anatomy(dsn: str, n: int) -> None:
    async with receiver_process() as receiver:
        setup = await asyncpg.connect(dsn)
        await db.migrate(setup)
        version = await setup.fetchval("SHOW server_version")
        await courier.reset_tables(setup)
        await courier.add_endpoints(setup, receiver.base, 1)
        relay_id = uuid.uuid4()
        await setup.execute(
            "INSERT INTO courier.relays (id, hostname, pid, idle) VALUES ($1, 'anatomy', 0, true)",
            relay_id,
        )
        producer = await asyncpg.connect(dsn)
        unsynced = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
        listener = await asyncpg.connect(dsn)
        claimer = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
        prober = await asyncpg.connect(dsn)
        heard = asyncio.Event()
        heard_at = [0.0]

        def on_notify(*_: object) -> None:
            heard_at[0] = time.perf_counter()
            heard.set()

        await listener.add_listener("courier_outbox", on_notify)
        loopback = parse_networks("127.0.0.0/8")
        clients = PinnedClients(max_in_flight=64, allowed_networks=loopback)
        transport = ReqwestTransport(clients, timeout=10.0, response_body_limit=4096)
        session = new_session(max_in_flight=64, allowed_networks=loopback)
        other = WebhookTransport(session, timeout=10.0, response_body_limit=4096)
        unsealer = Unsealer(None)
        steps: dict[str, list[float]] = {
            k: []
            for k in (
                "commit",
                "commit_no_fsync",
                "notify",
                "claim",
                "fan_out",
                "claim_no_fan_out",
                "select_1",
                "select_1_after_idle",
                "send",
                "send_aiohttp",
            )
        }
        await receiver.reset("latency")
        try:
            for i in range(n + 20):  # the first 20 warm up
                await setup.execute("UPDATE courier.relays SET idle = true WHERE id = $1", relay_id)
                await asyncio.sleep(GAP)
                p0 = time.perf_counter()
                await prober.fetchval("SELECT 1")
                p1 = time.perf_counter()
                await asyncio.sleep(GAP)
                heard.clear()
                t = time.time()
                split = i % 2 == 1
                t0 = time.perf_counter()
                await (unsynced if split else producer).execute(courier.latency_statement(t))
                t1 = time.perf_counter()
                await asyncio.wait_for(heard.wait(), 5)
                t2 = heard_at[0]
                if split:
                    t2a = time.perf_counter()
                    await claimer.fetchval("SELECT courier.fan_out(100)")
                    t2b = time.perf_counter()
                    rows = await claimer.fetch(CLAIM, relay_id, 0)
                    t3 = time.perf_counter()
                else:
                    t2a = time.perf_counter()
                    rows = await claimer.fetch(CLAIM, relay_id, 100)
                    t3 = time.perf_counter()
                assert len(rows) == 1, rows
                job = _job(rows[0], unsealer)
                t3a = time.perf_counter()
                result = await (other if split else transport).send(job)
                t4 = time.perf_counter()
                await claimer.fetchval("SELECT 1")
                t5 = time.perf_counter()
                assert result.status == 200, result
                await claimer.execute("DELETE FROM courier.queue WHERE id = $1", job.delivery_id)
                if i < 20:
                    continue
                steps["commit_no_fsync" if split else "commit"].append(t1 - t0)
                steps["notify"].append(t2 - t1)
                if split:
                    steps["fan_out"].append(t2b - t2a)
                    steps["claim_no_fan_out"].append(t3 - t2b)
                else:
                    steps["claim"].append(t3 - t2a)
                steps["send_aiohttp" if split else "send"].append(t4 - t3a)
                steps["select_1"].append(t5 - t4)
                steps["select_1_after_idle"].append(p1 - p0)
        finally:
            await clients.close()
            await session.close()
            for c in (producer, unsynced, listener, claimer, prober, setup):
                await c.close()
        # The receiver's figure for the events sent as the relay does (even ones: fsync'd commit,
        # fan-out inside the claim, pyreqwest), the warm-up left out.
        latencies = (await receiver.stats(latencies=True))["latencies"][20::2]
        print(
            f"\nidle anatomy on Postgres {version}: {n} events {GAP * 1000:.0f} ms apart (p50, ms)"
        )
        for name, values in steps.items():
            print(f"  {name:<20} {statistics.median(values) * 1000:6.3f}")
        path = ("commit", "notify", "claim", "send")
        total = sum(statistics.median(steps[k]) for k in path) * 1000
        print(f"  {'sum of the path':<20} {total:6.3f}   (commit + notify + claim + send)")
        received = statistics.median(latencies) * 1000
        print(f"  {'receiver p50':<20} {received:6.3f}   (commit -> receipt, as the benchmark)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="18", help="18, 16 or 15 (as scripts/bench.py)")
    parser.add_argument("--dsn", help="use this database instead")
    parser.add_argument("-n", type=int, default=400)
    args = parser.parse_args()
    for version in args.postgres.split(","):
        async with servers.server(version, args.dsn) as (dsn, _):
            await anatomy(dsn, args.n)


if __name__ == "__main__":
    asyncio.run(main())
