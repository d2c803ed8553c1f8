"""Soak (issue 12): a steady stream of events for minutes with a short retention, to show that
the tables stay bounded, latency stays flat, and producers are not slowed while pruning runs.

Only with ``--only soak`` (it takes minutes; not part of the default run or of --quick).

* Producers commit one event per transaction at ``rate`` events/s (open loop, as the latency
  measurement does), each commit's round trip timed.
* The relay (a real ``pgcourier run``) delivers to one endpoint and prunes in the background
  with PGCOURIER_RETENTION = PGCOURIER_DEAD_RETENTION = ``retention``.
* Every ``interval`` seconds: the size of each table (heap + TOAST) and of its indexes, and the
  commit -> receipt latencies of the deliveries received in the interval.
* Every 100 ms: whether a pruning batch committed since the last look (courier.retention's
  last_pass_at moves with every batch). Producer commits are then split into those started while
  pruning ran and the others.

``--plot FILE`` draws sizes, latency and producer commit time over time: a PNG with matplotlib,
else an SVG drawn by hand beside a CSV of the intervals (FILE with .svg and .csv).
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from benchlib import courier
from benchlib.courier import pct
from benchlib.measures import Bench

TABLES = ("outbox", "queue", "delivery_history", "attempts", "dead_letters")
SIZES = """
SELECT t.name, pg_table_size(('courier.' || t.name)::regclass) AS heap,
       pg_indexes_size(('courier.' || t.name)::regclass) AS indexes
FROM unnest($1::text[]) AS t(name)
"""
# Every index of those tables on its own: which one grows, if any.
INDEX_SIZES = """
SELECT i.indexrelid::regclass::text AS name, pg_relation_size(i.indexrelid) AS bytes
FROM pg_index AS i
WHERE i.indrelid = ANY (SELECT ('courier.' || t.name)::regclass FROM unnest($1::text[]) AS t(name))
"""


@dataclass(frozen=True)
class SoakPlan:
    rate: float = 1000.0
    seconds: float = 180.0
    retention: float = 30.0
    interval: float = 10.0


QUICK_PLAN = SoakPlan(rate=200.0, seconds=24.0, retention=4.0, interval=3.0)


@dataclass
class Commit:
    started: float  # time.time()
    seconds: float


async def _produce(dsn: str, plan: SoakPlan, commits: list[Commit]) -> None:
    """Open-loop producers (see courier.produce_at_rate), each commit timed."""
    n = int(plan.rate * plan.seconds)
    workers = max(1, min(8, int(plan.rate) // 250))
    conns = [await asyncpg.connect(dsn) for _ in range(workers)]
    start = time.monotonic() + 0.1

    async def worker(k: int, conn: asyncpg.Connection) -> None:
        for i in range(k, n, workers):
            delay = start + i / plan.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            t = time.time()
            t0 = time.perf_counter()
            await conn.execute(courier.latency_statement(t))
            commits.append(Commit(t, time.perf_counter() - t0))

    try:
        await asyncio.gather(*(worker(k, c) for k, c in enumerate(conns)))
    finally:
        for c in conns:
            await c.close()


async def _watch_pruning(conn: asyncpg.Connection, windows: list[tuple[float, bool]]) -> None:
    """Every 100 ms, (time, whether a pruning batch committed since the previous look)."""
    last = await conn.fetchval("SELECT last_pass_at FROM courier.retention")
    while True:
        await asyncio.sleep(0.1)
        now = await conn.fetchval("SELECT last_pass_at FROM courier.retention")
        windows.append((time.time(), now != last))
        last = now


async def soak(bench: Bench, plan: SoakPlan) -> None:
    conn = await bench.conn()
    watcher = await bench.conn()
    try:
        await courier.reset_tables(conn)
        await courier.add_endpoints(conn, bench.receiver.base, 1)
        await conn.execute(
            "UPDATE courier.retention SET events_at = NULL, events_id = NULL, recheck_at = NULL,"
            " recheck_id = NULL, last_pass_at = NULL"
        )
        await conn.execute("TRUNCATE courier.retention_held")  # (a TRUNCATE wakes nothing)
        env = {
            "PGCOURIER_RETENTION": f"{plan.retention:g}s",
            "PGCOURIER_DEAD_RETENTION": f"{plan.retention:g}s",
        }
        async with bench.relay(**env) as relay:
            await courier.wait_relay_idle(conn)
            await bench.receiver.reset("latency")
            commits: list[Commit] = []
            windows: list[tuple[float, bool]] = []
            intervals: list[dict[str, Any]] = []
            t0 = time.time()
            producing = asyncio.create_task(_produce(bench.dsn, plan, commits))
            watching = asyncio.create_task(_watch_pruning(watcher, windows))
            seen = 0
            try:
                # One row per interval, on a fixed schedule, and one more after the producers
                # stop (the last deliveries arrive, pruning goes on).
                for k in range(1, int(plan.seconds / plan.interval) + 2):
                    await asyncio.sleep(max(0.0, t0 + k * plan.interval - time.time()))
                    relay.check_alive("the relay")
                    if producing.done():
                        producing.result()  # a producer's error, raised here
                    seen = await _sample(bench, conn, t0, commits, seen, intervals)
                await producing
            finally:
                watching.cancel()
                producing.cancel()
        bench.results["soak"] = summarise(plan, intervals, commits, windows)
        bench.results["soak"]["intervals"] = intervals
        print_intervals(intervals)
        print_indexes(bench.results["soak"]["index_mb"])
    finally:
        await conn.close()
        await watcher.close()


async def _sample(
    bench: Bench,
    conn: asyncpg.Connection,
    t0: float,
    commits: list[Commit],
    seen: int,
    intervals: list[dict[str, Any]],
) -> int:
    """One row of the interval table; returns how many latencies have been read so far."""
    stats = await bench.receiver.stats(latencies=True, since=seen)
    fresh = sorted(stats["latencies"])
    sizes = {r["name"]: r for r in await conn.fetch(SIZES, list(TABLES))}
    now = time.time()
    previous = intervals[-1]["t"] if intervals else 0.0
    made = [c for c in commits if previous <= c.started - t0 < now - t0]
    row: dict[str, Any] = {
        "t": round(now - t0, 1),
        "events_per_s": len(made) / max(now - t0 - previous, 1e-9),
        "latency_p50_ms": pct(fresh, 50) * 1000,
        "latency_p99_ms": pct(fresh, 99) * 1000,
        "commit_p50_ms": pct(sorted(c.seconds for c in made), 50) * 1000,
        "commit_p99_ms": pct(sorted(c.seconds for c in made), 99) * 1000,
        "table_mb": sum(r["heap"] for r in sizes.values()) / 2**20,
        "index_mb": sum(r["indexes"] for r in sizes.values()) / 2**20,
        "outbox_rows": await conn.fetchval("SELECT count(*) FROM courier.outbox"),
    }
    for name in TABLES:
        row[f"{name}_mb"] = (sizes[name]["heap"] + sizes[name]["indexes"]) / 2**20
    for r in await conn.fetch(INDEX_SIZES, list(TABLES)):
        row[f"index:{r['name']}"] = r["bytes"] / 2**20
    intervals.append(row)
    return seen + len(fresh)


def summarise(
    plan: SoakPlan,
    intervals: list[dict[str, Any]],
    commits: list[Commit],
    windows: list[tuple[float, bool]],
) -> dict[str, Any]:
    """The figures that say "flat": the steady part starts once two retention periods (and an
    interval) have passed, when pruning has caught up with what the first period produced."""
    # (Not the last row, taken after the producers stopped: a handful of events.)
    loaded = [r for r in intervals if r["t"] <= plan.seconds + plan.interval / 2] or intervals
    steady = [r for r in loaded if r["t"] >= 2 * plan.retention + plan.interval] or loaded
    total = [r["table_mb"] + r["index_mb"] for r in steady]
    pruning = _pruning_spans(windows)
    during = sorted(c.seconds for c in commits if _inside(c.started, pruning))
    outside = sorted(c.seconds for c in commits if not _inside(c.started, pruning))
    pruning_seconds = sum(b - a for a, b in pruning)
    run_seconds = (max(c.started for c in commits) - min(c.started for c in commits)) or 1.0
    return {
        "rate": plan.rate,
        "seconds": plan.seconds,
        "retention_s": plan.retention,
        "events": len(commits),
        "steady_first_mb": total[0],
        "steady_last_mb": total[-1],
        "steady_max_mb": max(total),
        "size_growth": total[-1] / total[0] if total[0] else float("nan"),
        "latency_p50_first_ms": steady[0]["latency_p50_ms"],
        "latency_p50_last_ms": steady[-1]["latency_p50_ms"],
        "latency_p99_worst_ms": max(r["latency_p99_ms"] for r in steady),
        "pruning_share": pruning_seconds / run_seconds,
        "commit_p50_pruning_ms": pct(during, 50) * 1000,
        "commit_p50_idle_ms": pct(outside, 50) * 1000,
        "commit_p99_pruning_ms": pct(during, 99) * 1000,
        "commit_p99_idle_ms": pct(outside, 99) * 1000,
        "events_per_s_pruning": len(during) / pruning_seconds if pruning_seconds else float("nan"),
        "events_per_s_idle": len(outside) / max(run_seconds - pruning_seconds, 1e-9),
        # Each index's MB where the steady part starts, at its middle and at its end.
        "index_mb": {
            key.removeprefix("index:"): [round(r.get(key, 0.0), 2) for r in _marks(steady)]
            for key in steady[-1]
            if key.startswith("index:")
        },
    }


def _marks(steady: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [steady[0], steady[len(steady) // 2], steady[-1]]


def _pruning_spans(windows: list[tuple[float, bool]]) -> list[tuple[float, float]]:
    """The 100 ms windows in which a pruning batch committed, as (start, end) times."""
    spans = []
    for (before, _), (after, pruned) in itertools.pairwise(windows):
        if pruned:
            spans.append((before, after))
    return spans


def _inside(t: float, spans: list[tuple[float, float]]) -> bool:
    return any(a <= t < b for a, b in spans)


COLUMNS = (
    ("t", "t s", "{:>6.0f}"),
    ("events_per_s", "ev/s", "{:>6.0f}"),
    ("latency_p50_ms", "lat p50", "{:>8.1f}"),
    ("latency_p99_ms", "lat p99", "{:>8.1f}"),
    ("commit_p50_ms", "commit p50", "{:>10.2f}"),
    ("commit_p99_ms", "commit p99", "{:>10.2f}"),
    ("outbox_rows", "outbox rows", "{:>11,}"),
    ("table_mb", "tables MB", "{:>9.1f}"),
    ("index_mb", "indexes MB", "{:>10.1f}"),
)


def print_intervals(intervals: list[dict[str, Any]]) -> None:
    print("\nsoak, per interval (latency: commit -> receipt, ms; commit: producer round trip, ms)")
    print(" ".join(f"{title:>{len(fmt.format(0))}}" for _, title, fmt in COLUMNS))
    for row in intervals:
        print(" ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS))


def print_indexes(sizes: dict[str, list[float]]) -> None:
    print("\nsoak, each index's MB over the steady part (start, middle, end)")
    for name, (first, middle, last) in sorted(sizes.items(), key=lambda kv: -kv[1][-1]):
        print(f"{name:<52} {first:>8.2f} {middle:>8.2f} {last:>8.2f}")


def plot(result: dict[str, Any], path: str) -> None:
    """Sizes, latency and commit time per interval: PNG with matplotlib, else CSV + SVG."""
    intervals = result["intervals"]
    series = {
        "tables + indexes MB": [r["table_mb"] + r["index_mb"] for r in intervals],
        "latency p50 ms": [r["latency_p50_ms"] for r in intervals],
        "latency p99 ms": [r["latency_p99_ms"] for r in intervals],
        "commit p99 ms": [r["commit_p99_ms"] for r in intervals],
    }
    xs = [r["t"] for r in intervals]
    try:
        import matplotlib  # type: ignore[import-not-found]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found]
    except ImportError:
        base = Path(path).with_suffix("")
        write_csv(intervals, base.with_suffix(".csv"))
        write_svg(xs, series, base.with_suffix(".svg"))
        print(f"matplotlib is not installed: wrote {base}.csv and {base}.svg instead")
        return
    fig, axes = plt.subplots(len(series), 1, figsize=(8, 2.2 * len(series)), sharex=True)
    for ax, (name, ys) in zip(axes, series.items(), strict=True):
        ax.plot(xs, ys, marker=".")
        ax.set_ylabel(name, fontsize="small")
        ax.set_ylim(bottom=0)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}")


def write_csv(intervals: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(intervals[0]))
        writer.writeheader()
        writer.writerows(intervals)


def write_svg(xs: list[float], series: dict[str, list[float]], path: Path) -> None:
    """One small line chart per series, stacked, each from 0 to its maximum."""
    width, height, pad = 640, 140, 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height * len(series)}" font-family="sans-serif" font-size="11">'
    ]
    x_max = max(xs) or 1.0
    for k, (name, ys) in enumerate(series.items()):
        top = k * height
        finite = [y for y in ys if y == y]  # NaN (an empty interval) left out
        y_max = max(finite, default=1.0) or 1.0

        def px(x: float, y: float, top: int = top, y_max: float = y_max) -> str:
            sx = pad + (width - 2 * pad) * x / x_max
            sy = top + height - pad / 2 - (height - pad) * y / y_max
            return f"{sx:.1f},{sy:.1f}"

        points = " ".join(px(x, y) for x, y in zip(xs, ys, strict=True) if y == y)
        parts += [
            f'<text x="{pad}" y="{top + 14}">{name} (max {y_max:.1f}; x: 0-{x_max:.0f} s)</text>',
            f'<line x1="{pad}" y1="{top + height - pad / 2}" x2="{width - pad}" '
            f'y2="{top + height - pad / 2}" stroke="#999"/>',
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{points}"/>',
        ]
    parts.append("</svg>")
    path.write_text("\n".join(parts))
