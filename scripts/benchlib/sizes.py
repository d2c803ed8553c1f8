"""How much each measurement does, in a full run and in --quick."""

from __future__ import annotations

from dataclasses import dataclass

IDLE_RATE = 50  # events 20 ms apart: the relay goes idle between two
COST_RATE = 200  # the steady rate whose CPU per 1,000 events is measured for both queues


@dataclass(frozen=True)
class Sizes:
    ceiling_seconds: float
    drain_events: int
    fanout_events: int
    fanout_endpoints: int
    latency_phases: tuple[tuple[int, float], ...]  # (events/s, seconds); IDLE_RATE first
    pgq_latency_phases: tuple[tuple[int, float], ...]
    producer_seconds: int
    producer_clients: int
    history_rows: int
    isolation_seconds: float  # each case of the isolation measurement, events 20 ms apart
    hostile_backlog: int  # events waiting for the hostile endpoint in each isolation case
    tenant_backlog: int = 50_000  # the flooding tenant's queued events (issue 13)
    tenant_seconds: float = 10  # each phase of the tenant measurement, 20 events/s


FULL = Sizes(
    ceiling_seconds=5,
    drain_events=50_000,
    fanout_events=5_000,
    fanout_endpoints=10,
    latency_phases=((IDLE_RATE, 10), (200, 10), (1000, 10), (2000, 10)),
    pgq_latency_phases=((IDLE_RATE, 10), (COST_RATE, 10), (1000, 10)),
    producer_seconds=10,
    producer_clients=32,
    history_rows=1_000_000,
    isolation_seconds=10,
    hostile_backlog=2_000,
)
QUICK = Sizes(
    ceiling_seconds=1,
    drain_events=1_000,
    fanout_events=200,
    fanout_endpoints=10,
    latency_phases=((IDLE_RATE, 1), (COST_RATE, 1), (1000, 1)),  # 2,000: full run only
    pgq_latency_phases=((IDLE_RATE, 1), (COST_RATE, 1), (1000, 1)),
    producer_seconds=1,
    producer_clients=8,
    history_rows=20_000,
    isolation_seconds=1,
    hostile_backlog=200,
    tenant_seconds=3,
)


def phase_name(rate: int) -> str:
    return "latency@idle" if rate == IDLE_RATE else f"latency@{rate}"
