"""What the relay does with one finished HTTP attempt: decide the outcome, log the canonical line,
count it. Pure functions of the attempt, kept apart from the loop that schedules attempts."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from pgcourier import policy
from pgcourier.metrics import Metrics
from pgcourier.model import AttemptResult, Job

if TYPE_CHECKING:
    from pgcourier.relay import RelayConfig

log = structlog.get_logger("pgcourier.relay")


def decide(
    job: Job, result: AttemptResult, config: RelayConfig, rng: random.Random
) -> policy.Outcome:
    """The outcome of ``result`` under the relay's retry policy and the endpoint's own rules."""
    return policy.decide(
        status=result.status,
        error=result.error,
        attempts_in_schedule=job.attempt - job.schedule_base,
        schedule=config.retry_schedule,
        jitter=config.retry_jitter,
        rng=rng,
        permanent_statuses=job.permanent_statuses,
        retry_after=retry_after_seconds(result.retry_after),
        retry_after_cap=config.retry_after_cap,
        permanent=result.permanent,
    )


def log_attempt(job: Job, result: AttemptResult, outcome: policy.Outcome) -> None:
    """The one canonical log line of a delivery attempt."""
    fields: dict[str, Any] = {
        "event_id": str(job.event_id),
        "endpoint_id": str(job.endpoint_id),
        "delivery_id": job.delivery_id,
        "event_type": job.event_type,
        "attempt": job.attempt,
        "status": result.status,
        "duration_ms": round(result.duration * 1000, 2),
        "outcome": type(outcome).__name__.lower(),
    }
    if result.error:
        fields["error"] = result.error
    if isinstance(outcome, policy.Retry):
        fields["retry_in_s"] = round(outcome.after, 3)
    if isinstance(outcome, policy.Dead):
        fields["reason"] = outcome.reason
    log.info("delivery attempt", **fields)


def observe(metrics: Metrics, job: Job, result: AttemptResult, outcome: policy.Outcome) -> None:
    """Count the attempt in the relay's metrics."""
    name = type(outcome).__name__.lower()
    metrics.deliveries_by_outcome[name].inc()
    if metrics.endpoint_deliveries is not None:
        metrics.endpoint_deliveries.labels(str(job.endpoint_id), name).inc()
    if result.status is not None:
        metrics.delivery_duration.observe(result.duration)
    if isinstance(outcome, policy.Delivered):
        lag = (datetime.now(UTC) - job.created_at).total_seconds()
        metrics.delivery_lag.observe(max(lag, 0.0))


def retry_after_seconds(value: str | None) -> float | None:
    """The wait a response's Retry-After asks for; None when absent or unreadable.

    The header is the receiver's to fill: whatever it holds must cost at most the hint, never
    the worker reading it (parse_retry_after returns None for what it cannot read; the guard
    stays because a worker must not die of a header).
    """
    if value is None:
        return None  # the usual case: no clock read on the hot path
    try:
        return policy.parse_retry_after(value, now=datetime.now(UTC))
    except (ValueError, OverflowError):
        return None
