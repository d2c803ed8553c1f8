#!/usr/bin/env python3
"""Measure pgcourier against this machine's own limits and beside PgQueuer.

    python scripts/bench.py                       # full run on the embedded Postgres 18
    python scripts/bench.py --quick               # small sizes, ~2 minutes, targets not enforced
    python scripts/bench.py --only latency        # one measurement
    python scripts/bench.py --postgres 15,16,18   # each version in turn; the worst one counts
    python scripts/bench.py --dsn postgresql://...  # that database (PgQueuer's goes beside it)
    python scripts/bench.py --json out.json --plot out.png

Each version's server keeps Postgres's default durability. The receiver runs in its own process
(aiohttp on loopback, answers 200 at once); the relay is the real ``pgcourier run`` process;
PgQueuer (a dev dependency of the benchmark only) runs as its own consumer process whose job
POSTs the same body bytes to the same receiver, from its own database on the same server.
Measurements, each for both queues where both apply:

ceiling    plain aiohttp client, 64 in flight, signed bodies: requests/s (the reference; the
           mean of a run before the drains and one after the fan-out)
drain      N events committed before the queue starts, one endpoint: deliveries/s
fanout     N events to 10 endpoints (pgcourier): deliveries/s
latency    producers commit one event per transaction at a steady rate: commit -> receipt, at
           idle (events 20 ms apart), 200, 1,000 and 2,000 events/s (PgQueuer: idle and 1,000)
isolation  one endpoint's latency at idle, alone and beside an endpoint that is slow,
           rate-limited, paused by Retry-After, has its circuit open, is disabled, or has an
           ordering key blocked (a fresh relay for each)
producers  32 pgbench clients committing single enqueues with the queue running: pgcourier with
           its wake-up trigger, without it, and with an always-notify trigger; PgQueuer's enqueue
cost       CPU seconds per 1,000 deliveries: the queue's process plus the Postgres processes
           serving its database (psutil), over a drain committed to a running, idle queue
history    drain rate with many already-delivered events in the tables vs with none
processes  the drain with two `pgcourier run` processes on the database vs one
memory     peak RSS of the relay (and of PgQueuer's consumer) during drain
tenants    one tenant's events at 20/s: latency alone and beside another tenant's 50,000
           queued events (issue 13)
soak       only with --only soak (minutes): 1,000 events/s for 3 minutes with a 30 s retention;
           table and index sizes, commit -> receipt latency and producer commit time per
           interval, and producers while pruning runs vs not (--soak-rate, --soak-seconds,
           --soak-retention; --quick: 200 events/s for 24 s with a 4 s retention)
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "src")]

try:
    from benchlib.cli import main
except ModuleNotFoundError as exc:
    if (exc.name or "").partition(".")[0] != "pgqueuer":
        raise
    sys.exit("scripts/bench.py runs PgQueuer beside pgcourier: pip install 'pgqueuer>=1.6'")

if __name__ == "__main__":
    sys.exit(main(__doc__ or ""))
