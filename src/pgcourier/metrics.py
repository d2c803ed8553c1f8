"""Prometheus metrics on a registry the app owns (never the global one).

Counters and histograms are updated by the relay as it works. Gauges that describe the database
(pending deliveries, dead letters, oldest pending age) are computed at scrape time with one
cheap query (see :func:`pgcourier.admin.app.create_app`), never per delivery.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# HTTP round trips: from sub-millisecond loopback to the 10 s default timeout.
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Commit -> delivery: milliseconds when healthy, hours when retries are involved.
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600, 36000)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """Every metric pgcourier exports, registered on ``registry`` (a new one by default)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, per_endpoint: bool = False
    ) -> None:
        """``per_endpoint`` adds ``pgcourier_endpoint_deliveries_total{endpoint_id,outcome}``:
        one series per endpoint and outcome, so it is off unless asked for."""
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.endpoint_deliveries: Counter | None = (
            Counter(
                "pgcourier_endpoint_deliveries",
                "Delivery attempts by endpoint and outcome.",
                ["endpoint_id", "outcome"],
                registry=r,
            )
            if per_endpoint
            else None
        )
        self.deliveries = Counter(
            "pgcourier_deliveries", "Delivery attempts by outcome.", ["outcome"], registry=r
        )
        self.delivery_duration = Histogram(
            "pgcourier_delivery_duration_seconds",
            "HTTP round trip of a delivery attempt.",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.delivery_lag = Histogram(
            "pgcourier_delivery_lag_seconds",
            "From the event's creation to its successful delivery.",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.wakeups = Counter(
            "pgcourier_wakeups", "Relay wake-ups by source.", ["source"], registry=r
        )
        self.claim_batch_size = Histogram(
            "pgcourier_claim_batch_size",
            "Deliveries leased per non-empty claim.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.listener_connected = Gauge(
            "pgcourier_listener_connected", "1 while the LISTEN connection is up.", registry=r
        )
        self.pending_deliveries = Gauge(
            "pgcourier_pending_deliveries",
            "Deliveries not yet delivered or dead (at scrape).",
            registry=r,
        )
        self.oldest_pending_age = Gauge(
            "pgcourier_oldest_pending_age_seconds",
            "Age of the oldest event still waiting for a delivery (at scrape).",
            registry=r,
        )
        self.open_circuits = Gauge(
            "pgcourier_open_circuits",
            "Endpoints whose circuit is open or half-open, shared by every relay (at scrape).",
            registry=r,
        )
        self.dead_letters = Gauge(
            "pgcourier_dead_letters",
            "Dead deliveries waiting for replay (at scrape).",
            registry=r,
        )
        self.pruned_rows = Counter(
            "pgcourier_pruned_rows",
            "Rows removed by retention, by table.",
            ["table"],
            registry=r,
        )
        self.table_bytes = Gauge(
            "pgcourier_table_size_bytes",
            "pg_total_relation_size of courier's growing tables (at scrape).",
            ["table"],
            registry=r,
        )
        # Label values known up front, so they show as 0 before the first occurrence.
        # The children resolved once: labels() costs 1.5 us a call, an attempt's inc() 0.5.
        self.deliveries_by_outcome = {
            outcome: self.deliveries.labels(outcome) for outcome in ("delivered", "retry", "dead")
        }
        for source in ("notify", "poll", "retry_timer", "completion"):
            self.wakeups.labels(source)
        for table in ("outbox", "delivery_history", "attempts", "dead_letters"):
            self.pruned_rows.labels(table)
