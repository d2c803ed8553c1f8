"""The relay's view of Postgres: a small interface and its asyncpg implementation."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from uuid import UUID

import asyncpg
import structlog

from pgcourier.db import QUERIES, translate_errors
from pgcourier.going_idle import DEFAULT_IDLE_SETTLE, ROW_WAIT, IdleTurn, SettleWait
from pgcourier.model import Completion, Job
from pgcourier.policy import Dead, Delivered, EndpointReport, Retry, endpoint_reports
from pgcourier.queue_vacuum import QueueVacuum
from pgcourier.sealing import SecretUnavailable, Unsealer
from pgcourier.tasks import log_failure
from pgcourier.unopened import UnopenedSecrets

log = structlog.get_logger("pgcourier.store")


class RelayStore(Protocol):
    """What the relay loop needs from storage. Every method is one short transaction."""

    async def register(self, relay_id: UUID) -> None: ...
    async def heartbeat(self, relay_id: UUID) -> bool: ...
    async def deregister(self, relay_id: UUID) -> None: ...
    async def reap(self, older_than: float, *, keep: UUID | None = None) -> None: ...
    async def go_idle(self, relay_id: UUID, limit: int, lease: float) -> IdleTurn: ...
    async def claim(self, relay_id: UUID, limit: int, lease: float) -> list[Job]: ...
    async def fan_out(self, limit: int) -> int: ...
    async def next_due(self) -> datetime | None: ...
    async def complete(self, relay_id: UUID, batch: Sequence[Completion]) -> None: ...
    async def renew(self, relay_id: UUID, ids: Sequence[int], lease: float) -> set[int]: ...
    async def release(self, relay_id: UUID, ids: Sequence[int]) -> None: ...
    def abandon(self) -> None: ...


_NO_HEADERS: dict[str, str] = {}

# PGCOURIER_MAX_CLAIMS' default: claims without a recorded attempt before a delivery is buried.
DEFAULT_MAX_CLAIMS = 10


def _job(row: asyncpg.Record, unsealer: Unsealer) -> Job:
    """The job for a claimed row; :class:`SecretUnavailable` when its secrets do not open."""
    secrets = tuple(unsealer.open(s) for s in row["secrets"])
    slack_token = unsealer.open_optional(row["slack_token"])
    return Job(
        delivery_id=row["id"],
        event_id=row["event_id"],
        endpoint_id=row["endpoint_id"],
        attempts=row["attempts"],
        schedule_base=row["schedule_base"],
        event_type=row["event_type"],
        payload=row["payload"],
        created_at=row["created_at"],
        url=row["url"],
        secrets=secrets,
        timeout=row["timeout_seconds"],
        headers=_NO_HEADERS if row["headers"] == "{}" else json.loads(row["headers"]),
        signature_scheme=row["signature_scheme"],
        permanent_statuses=frozenset(row["permanent_statuses"]),
        ordering_key=row["ordering_key"],
        troubled=row["troubled"],
        kind=row["kind"],
        slack_channel=row["slack_channel"],
        slack_token=slack_token,
        template=row["template"],
    )


@dataclass(frozen=True, slots=True)
class CircuitConfig:
    """When endpoints' circuits open, how long they stay open, when endpoints are disabled."""

    failures: int = 5
    cooldown: float = 60.0
    max_cooldown: float = 3600.0
    disable_after: float | None = 5 * 86400.0


class PgStore:
    """:class:`RelayStore` on an asyncpg pool, using the named queries of ``sql/queries/``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        circuit: CircuitConfig | None = None,
        *,
        max_claims: int = DEFAULT_MAX_CLAIMS,
        unsealer: Unsealer | None = None,
        claim_pool: asyncpg.Pool | None = None,
        unopened: UnopenedSecrets | None = None,
        idle_settle: float = DEFAULT_IDLE_SETTLE,
    ) -> None:
        """``claim_pool``, if given, serves the claim and the fan-out: the relay's runs with
        synchronous_commit off (see runtime.running), so a claim does not wait for a WAL flush.
        Without it, everything uses ``pool``."""
        self._pool = pool
        self._claims = claim_pool or pool
        self._circuit = circuit or CircuitConfig()
        self._max_claims = max_claims
        # Opens the endpoints' stored secrets and Slack tokens, once per distinct ciphertext.
        self._unsealer = unsealer or Unsealer(None)
        # Endpoints whose secrets those keys do not open, lately (read by /ready too).
        self.unopened = unopened if unopened is not None else UnopenedSecrets()
        self._vacuum = QueueVacuum(pool)
        self._settle = SettleWait(idle_settle)

    async def vacuumed(self) -> None:
        """Until the queue's vacuum that completions started (if any) has ended."""
        await self._vacuum.wait()

    async def close(self) -> None:
        """Stop what the store runs in the background (its owner calls this before closing
        the pools)."""
        await self._vacuum.close()

    async def register(self, relay_id: UUID) -> None:
        with translate_errors():
            await self._pool.execute(
                QUERIES["register_relay"], relay_id, socket.gethostname(), os.getpid()
            )

    async def heartbeat(self, relay_id: UUID) -> bool:
        with translate_errors():
            return bool(await self._pool.fetchval(QUERIES["heartbeat_relay"], relay_id))

    async def deregister(self, relay_id: UUID) -> None:
        with translate_errors():
            await self._pool.execute(QUERIES["deregister_relay"], relay_id)

    async def reap(self, older_than: float, *, keep: UUID | None = None) -> None:
        """Housekeeping: forget dead relays (never relay ``keep``, the caller); discard what a
        fan-out racing an endpoint's deletion created for it; vacuum the queue if nothing else
        does."""
        with translate_errors():
            await self._pool.execute(QUERIES["reap_relays"], older_than, keep)
            await self._pool.execute(QUERIES["sweep_deleted_endpoints"])
            await self._vacuum.if_due()

    async def go_idle(self, relay_id: UUID, limit: int, lease: float) -> IdleTurn:
        """Mark the relay idle, so that producers notify it, then, in the same statement,
        :meth:`claim` and, if that took nothing, :meth:`next_due` (0020). Going idle waits
        (bounded) for the commits of producers that may have read the flag busy, so that the
        claim sees their events (0018). The claim runs there only after that wait, or when the
        row is held and already says idle (producers notify then, 0019), and only if it waits
        for no lock for long; else ``claimed`` is False and the caller claims. Not ``written``
        when another transaction holds the row flagged busy: nothing written, try again
        shortly (0019)."""
        now = time.monotonic()
        with translate_errors():
            rows = await self._claims.fetch(
                QUERIES["claim_going_idle"],
                relay_id,
                socket.gethostname(),
                os.getpid(),
                self._settle.seconds(now),
                ROW_WAIT,
                limit,
                lease,
                max(limit, 100),
                self._max_claims,
            )
        *claimed, last = rows
        if not self._settle.written(last["idle_state"], now):
            return IdleTurn(written=False)
        jobs = await self._jobs(relay_id, claimed) if claimed else []
        return IdleTurn(True, bool(last["claimed"]), jobs, last["next_due"], len(claimed))

    async def claim(self, relay_id: UUID, limit: int, lease: float) -> list[Job]:
        """Fan fresh events out into deliveries, then lease what is due within each endpoint's
        limits (retries and fresh deliveries alike, earliest first per endpoint)."""
        with translate_errors():
            rows = await self._claims.fetch(
                QUERIES["claim_due"], limit, lease, relay_id, max(limit, 100), self._max_claims
            )
        return await self._jobs(relay_id, rows)

    async def _jobs(self, relay_id: UUID, rows: Sequence[asyncpg.Record]) -> list[Job]:
        """The jobs of claimed rows: poison the claim buried is logged, deliveries whose
        secrets our keys do not open are handed back."""
        jobs = []
        unopened: dict[UUID, list[int]] = {}
        for row in rows:
            if row["poisoned"]:
                # Buried by the claim itself (migration 0009); nothing to send.
                log.error(
                    "delivery dead-lettered: claimed too often without an attempt recorded; "
                    "a relay may be crashing on it",
                    delivery_id=row["id"],
                    event_id=str(row["event_id"]),
                    endpoint_id=str(row["endpoint_id"]),
                    max_claims=self._max_claims,
                    relay_id=str(relay_id),
                )
            else:
                try:
                    jobs.append(_job(row, self._unsealer))
                except SecretUnavailable:
                    # Never sign with garbage, and never blame the endpoint: hand it back.
                    unopened.setdefault(row["endpoint_id"], []).append(row["id"])
        if unopened:
            try:
                await self._hand_back_unopened(relay_id, unopened)
            except Exception as exc:
                # The claim itself committed: return its other jobs rather than lose them too.
                # These leases run out on their own (a claim each, as after a crash).
                log_failure("could not hand back deliveries whose secret does not open", exc)
        if len(self.unopened):
            for job in jobs:
                self.unopened.opened(job.endpoint_id)
        return jobs

    async def _hand_back_unopened(self, relay_id: UUID, unopened: dict[UUID, list[int]]) -> None:
        """Give back deliveries whose endpoint's secret our keys do not open (see
        :mod:`pgcourier.unopened`): no attempt, no circuit, no poison count; one error per
        endpoint while it lasts."""
        ids = [delivery_id for ids in unopened.values() for delivery_id in ids]
        with translate_errors():
            await self._pool.execute(
                QUERIES["hand_back_unopened"], ids, relay_id, self.unopened.hold
            )
        for endpoint_id, handed in unopened.items():
            if self.unopened.note(endpoint_id, len(handed)):
                log.error(
                    "this relay's PGCOURIER_SECRET_KEY does not open the endpoint's stored "
                    "secret: its deliveries are handed back for a relay that has the key; "
                    "set the key the secret was encrypted with",
                    endpoint_id=str(endpoint_id),
                    deliveries=len(handed),
                    retry_in_seconds=self.unopened.hold,
                    relay_id=str(relay_id),
                )

    async def fan_out(self, limit: int) -> int:
        """Fan out up to ``limit`` fresh events, claiming nothing; how many it took."""
        with translate_errors():
            taken: int = await self._claims.fetchval(QUERIES["fan_out"], limit)
        return taken

    async def next_due(self) -> datetime | None:
        with translate_errors():
            due: datetime | None = await self._pool.fetchval(QUERIES["next_due"])
        return due

    async def complete(self, relay_id: UUID, batch: Sequence[Completion]) -> None:
        """Record the attempts and apply the outcomes in one transaction: one statement, so one
        round trip, unless keyed retries or endpoint reports need more."""
        # Columns of complete_deliveries: $1-$6 the outcomes, $8-$13 the attempt log ($7: relay).
        updates: list[list[object]] = [[] for _ in range(6)]
        log_columns: list[list[object]] = [[] for _ in range(6)]
        for c in batch:
            outcome = c.outcome
            status, delay = (
                ("delivered", None)
                if isinstance(outcome, Delivered)
                else ("pending", outcome.after)
                if isinstance(outcome, Retry)
                else ("dead", None)
            )
            error = c.result.error
            if isinstance(outcome, Dead) and error is None:
                error = outcome.reason
            for column, value in zip(
                updates,
                (c.job.delivery_id, status, delay, c.result.status, error, c.result.started_at),
                strict=True,
            ):
                column.append(value)
            logged: tuple[object, ...] = (
                c.job.event_id,
                c.job.endpoint_id,
                c.job.attempt,
                c.result.duration * 1000.0,
                c.result.response_body,
                c.result.error,
            )
            for column, logged_value in zip(log_columns, logged, strict=True):
                column.append(logged_value)
        args = (*updates, relay_id, *log_columns)
        reports = endpoint_reports(
            [(str(c.job.endpoint_id), c.outcome, c.job.troubled) for c in batch]
        )
        # Keyed deliveries going back to wait for a retry hold their key's later deliveries.
        held = [
            (c.job.endpoint_id, c.job.ordering_key, c.job.delivery_id, c.result.started_at, c)
            for c in batch
            if c.job.ordering_key is not None and isinstance(c.outcome, Retry)
        ]
        with translate_errors():
            if not held and not reports:  # the usual batch: all delivered, healthy endpoints
                await self._pool.execute(QUERIES["complete_deliveries"], *args)
                self._vacuum.after_completion(len(batch), moved=0)
                return
            async with self._pool.acquire() as conn, conn.transaction():
                applied = await conn.fetch(QUERIES["complete_deliveries"], *args)
                moved = 0
                if held:
                    done = {r["id"] for r in applied}
                    keyed = [h for h in held if h[2] in done]
                    status = await conn.execute(
                        QUERIES["hold_key_followers"],
                        [h[0] for h in keyed],
                        [h[1] for h in keyed],
                        [h[2] for h in keyed],
                        [_retry_at(h[4]) for h in keyed],
                    )
                    moved = int(status.rpartition(" ")[2])
                if reports:
                    await self._apply_reports(conn, reports)
        self._vacuum.after_completion(len(batch), moved)

    async def _apply_reports(
        self, conn: asyncpg.Connection, reports: dict[str, EndpointReport]
    ) -> None:
        ids = sorted(reports)  # endpoints are locked in id order: no deadlock between relays
        cfg = self._circuit
        rows = await conn.fetch(
            QUERIES["apply_endpoint_outcomes"],
            [UUID(i) for i in ids],
            [reports[i].ok for i in ids],
            [reports[i].trailing for i in ids],
            [reports[i].pause for i in ids],
            [reports[i].gone for i in ids],
            cfg.failures,
            cfg.cooldown,
            cfg.max_cooldown,
            cfg.disable_after,
        )
        for row in rows:
            if row["disabled_reason"] is not None:
                log.warning(
                    "endpoint disabled",
                    endpoint_id=str(row["endpoint_id"]),
                    reason=row["disabled_reason"],
                )
            elif row["circuit_state"] == "open":
                log.info("endpoint circuit open", endpoint_id=str(row["endpoint_id"]))

    async def renew(self, relay_id: UUID, ids: Sequence[int], lease: float) -> set[int]:
        kept: set[int] = set()
        with translate_errors():
            for chunk in _chunks(ids):
                rows = await self._pool.fetch(QUERIES["renew_leases"], chunk, relay_id, lease)
                kept.update(row["id"] for row in rows)
        return kept

    def abandon(self) -> None:
        """Close every connection at once: the database stopped answering during a stop.

        asyncpg shields a connection's release from cancellation, so a cancelled query still
        waits for the server (up to command_timeout, 60 s); closing the sockets ends it now.
        """
        self._pool.terminate()
        if self._claims is not self._pool:
            self._claims.terminate()

    async def release(self, relay_id: UUID, ids: Sequence[int]) -> None:
        with translate_errors():
            for chunk in _chunks(ids):
                await self._pool.execute(QUERIES["release_leases"], chunk, relay_id)


def _retry_at(c: Completion) -> datetime:
    assert isinstance(c.outcome, Retry)
    # A little before the retry time complete_deliveries set (that one counts from the commit):
    # followers are due no earlier than this, and the claim's key check covers the difference.
    return c.result.started_at + timedelta(seconds=c.result.duration + c.outcome.after)


def _chunks(ids: Sequence[int], size: int = 1000) -> list[list[int]]:
    """Id lists cut to a size whose "id = ANY($1)" the planner still answers from the index.
    (Renewing and releasing are idempotent, so chunks need no common transaction.)"""
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]
