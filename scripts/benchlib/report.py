"""Targets (issues 10 and 11), verdicts and the printed tables.

A target's goal is a number, or PgQueuer's figure in the same run. With several Postgres
versions in one invocation each version gets its own table, and a summary where a target is
met only if it is met on every version: the worst one counts.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil  # type: ignore[import-untyped]

from benchlib.latency import HOSTILE

Results = dict[str, dict[str, Any]]
Row = tuple[str, float, str, float, bool]  # label, value, op, goal, met


def get(results: Results, name: str, figure: str) -> float | None:
    value = results.get(name, {}).get(figure)
    return float(value) if isinstance(value, int | float) else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass(frozen=True)
class Target:
    label: str
    value: Callable[[Results], float | None]
    op: str
    goal: Callable[[Results], float | None]


def fixed(x: float) -> Callable[[Results], float | None]:
    return lambda r: x


def fig(name: str, figure: str) -> Callable[[Results], float | None]:
    return lambda r: get(r, name, figure)


TARGETS: list[Target] = [
    Target(
        "drain / PgQueuer's drain",
        lambda r: ratio(
            get(r, "drain", "deliveries_per_s"), get(r, "pgqueuer drain", "deliveries_per_s")
        ),
        ">=",
        fixed(1.2),
    ),
    Target("drain / ceiling", fig("drain", "ratio_to_ceiling"), ">=", fixed(0.65)),
    Target("fanout (10 endpoints) / ceiling", fig("fanout", "ratio_to_ceiling"), ">=", fixed(0.6)),
    Target(
        "latency@1000 p50 ms <= PgQueuer's",
        fig("latency@1000", "p50_ms"),
        "<=",
        fig("pgqueuer latency@1000", "p50_ms"),
    ),
    Target(
        "latency@1000 p99 ms <= PgQueuer's",
        fig("latency@1000", "p99_ms"),
        "<=",
        fig("pgqueuer latency@1000", "p99_ms"),
    ),
    Target("latency@idle p50 ms", fig("latency@idle", "p50_ms"), "<=", fixed(2.0)),
    Target("producers / PgQueuer's", fig("producers", "ratio_to_pgqueuer"), ">=", fixed(2.0)),
    Target("producers / without trigger", fig("producers", "ratio"), ">=", fixed(0.85)),
    Target(
        "CPU s per 1,000 <= PgQueuer's",
        fig("cost", "cpu_s_per_1000"),
        "<=",
        fig("pgqueuer cost", "cpu_s_per_1000"),
    ),
    Target("relay peak RSS MB", fig("memory", "peak_rss_mb"), "<=", fixed(150.0)),
    Target("history ratio", fig("history", "ratio"), ">=", fixed(0.9)),
    *(
        Target(f"isolation {c} p50 +ms", fig("isolation", f"{c}_p50_delta_ms"), "<=", fixed(1.0))
        for c in HOSTILE
    ),
    Target("tenant flood (50k) p50 +ms", fig("tenants", "p50_delta_ms"), "<=", fixed(1.0)),
]

# (label, measurement, figure): pgcourier's figure beside PgQueuer's in the same run.
COMPARED = [
    ("drain, deliveries/s", "drain", "deliveries_per_s"),
    ("latency@idle p50 ms", "latency@idle", "p50_ms"),
    ("latency@idle p99 ms", "latency@idle", "p99_ms"),
    ("latency@200 p50 ms", "latency@200", "p50_ms"),
    ("CPU s per 1,000 at 200/s", "latency@200", "cpu_s_per_1000"),
    ("  of which the process", "latency@200", "process_cpu_s_per_1000"),
    ("  of which Postgres backends", "latency@200", "backends_cpu_s_per_1000"),
    ("machine CPU s per 1,000 at 200/s", "latency@200", "machine_cpu_s_per_1000"),
    ("latency@1000 p50 ms", "latency@1000", "p50_ms"),
    ("latency@1000 p99 ms", "latency@1000", "p99_ms"),
    ("producers, commits/s", "producers", "commits_per_s"),
    ("CPU s per 1,000 deliveries", "cost", "cpu_s_per_1000"),
    ("  of which the process", "cost", "process_cpu_s_per_1000"),
    ("  of which Postgres backends", "cost", "backends_cpu_s_per_1000"),
    ("  of which Postgres background", "cost", "background_cpu_s_per_1000"),
    ("receiver CPU s per 1,000", "cost", "receiver_cpu_s_per_1000"),
    ("machine CPU s per 1,000 (all)", "cost", "machine_cpu_s_per_1000"),
    ("machine busy, cores", "cost", "machine_busy_cores"),
    ("drain/ceiling bound by CPU", "cost", "cpu_bound_ratio_to_ceiling"),
    ("peak RSS MB (drain)", "memory", "peak_rss_mb"),
]


def evaluate(results: Results) -> list[Row]:
    ceiling = get(results, "ceiling", "requests_per_s")
    for name in ("drain", "fanout"):
        if ceiling and name in results:
            results[name]["ratio_to_ceiling"] = results[name]["deliveries_per_s"] / ceiling
    # Where every core is busy (machine_busy_cores near the core count, in both measures),
    # throughput is the cores over the machine's CPU per delivery: the ratio of a queue's drain
    # to the ceiling cannot pass the ratio of their CPU per request, however the work is
    # scheduled. The bound a queue's drain meets on this machine unless its CPU per delivery
    # (its own, Postgres's, the receiver's) falls.
    per_request = get(results, "ceiling", "machine_cpu_s_per_1000")
    for name in ("cost", "pgqueuer cost"):
        per_delivery = get(results, name, "machine_cpu_s_per_1000")
        if per_request and per_delivery:
            results[name]["cpu_bound_ratio_to_ceiling"] = per_request / per_delivery
    rows: list[Row] = []
    for t in TARGETS:
        value, goal = t.value(results), t.goal(results)
        if value is None or goal is None or math.isnan(value) or math.isnan(goal):
            continue
        rows.append((t.label, value, t.op, goal, value >= goal if t.op == ">=" else value <= goal))
    return rows


def number(x: float) -> str:
    """Three decimals below 10 (CPU seconds per 1,000 are fractions), two above."""
    return f"{x:,.3f}" if abs(x) < 10 else f"{x:,.2f}"


def verdict(ok: bool, quick: bool) -> str:
    return "met" if ok else ("missed (quick: not enforced)" if quick else "MISSED")


def machine() -> str:
    return (
        f"{platform.node()}: {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
    )


def print_version(label: str, server: dict[str, str], results: Results, quick: bool) -> None:
    rows = evaluate(results)  # first: it adds the ratios to the ceiling to the results
    print(f"\n=== Postgres {label}: " + ", ".join(f"{k}={v}" for k, v in sorted(server.items())))
    print(f"\n{'measurement':<24} {'figure':<28} {'value':>12}")
    for name, data in results.items():
        for key, value in data.items():
            if key in ("samples_ms", "intervals", "index_mb"):  # (the soak prints these itself)
                continue
            text = (
                number(value)
                if isinstance(value, float)
                else f"{value:,}"
                if isinstance(value, int)
                else str(value)
            )
            print(f"{name:<24} {key:<28} {text:>12}")
    lines = []
    for text, name, figure in COMPARED:
        ours, theirs = get(results, name, figure), get(results, f"pgqueuer {name}", figure)
        if ours is None and theirs is None:
            continue
        r = ratio(ours, theirs)
        cells = [f"{number(x) if x is not None else '-':>11}" for x in (ours, theirs)]
        lines.append(f"{text:<32} {' '.join(cells)} {f'{r:.2f}' if r is not None else '-':>7}")
    if lines:
        head = f"{'side by side':<32} {'pgcourier':>11} {'PgQueuer':>11} {'ratio':>7}"
        print(f"\n{head}  (pgcourier / PgQueuer)", *lines, sep="\n")
    if rows:
        print(f"\n{'target':<36} {'value':>10} {'goal':>12}  result")
    for name, value, op, goal, ok in rows:
        print(f"{name:<36} {number(value):>10} {op + ' ' + number(goal):>12}  {verdict(ok, quick)}")


def print_summary(per_version: dict[str, list[Row]], quick: bool) -> bool:
    """Targets across versions; a target counts as met only when met on every version."""
    labels = list(dict.fromkeys(row[0] for rows in per_version.values() for row in rows))
    versions = list(per_version)
    all_met = True
    if len(versions) > 1:
        print("\n=== every version (the worst one counts)")
        print(f"{'target':<36} " + " ".join(f"{v:>10}" for v in versions) + "  result")
    for label in labels:
        found = {v: r for v, rows in per_version.items() for r in rows if r[0] == label}
        ok = all(r[4] for r in found.values())
        all_met = all_met and ok
        if len(versions) > 1:
            cells = [f"{number(found[v][1]) if v in found else '-':>10}" for v in versions]
            print(f"{label:<36} {' '.join(cells)}  {verdict(ok, quick)}")
    return all_met


def plot(per_version: dict[str, Results], path: str) -> None:
    try:
        import matplotlib  # type: ignore[import-not-found]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found]
    except ImportError:
        print("--plot needs matplotlib (pip install matplotlib); skipped")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    bars: dict[str, float] = {}
    for version, results in per_version.items():
        for name, data in results.items():
            if "latency@" in name:
                left.hist(data["samples_ms"], bins=100, histtype="step", label=f"{version} {name}")
        for name in ("ceiling", "drain", "pgqueuer drain", "fanout"):
            value = get(results, name, "deliveries_per_s") or get(results, name, "requests_per_s")
            if value:
                bars[f"{version} {name}"] = value
    left.set_xlabel("commit -> receipt (ms)")
    left.set_yscale("log")
    left.legend(fontsize="x-small")
    right.bar(list(bars), list(bars.values()))
    right.tick_params(axis="x", labelrotation=45, labelsize="x-small")
    right.set_ylabel("per second")
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}")
