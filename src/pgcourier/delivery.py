"""Webhook transport: one signed HTTP POST per attempt, returning a value, never raising."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

import aiohttp

from pgcourier import __version__
from pgcourier.model import AttemptResult, Job
from pgcourier.netguard import AddressGuard, Network, RefusedAddress
from pgcourier.signing import sign_headers

USER_AGENT = f"pgcourier/{__version__}"


class Transport(Protocol):
    """Sends one attempt of a job. Implementations report failures in the result."""

    async def send(self, job: Job) -> AttemptResult: ...


def new_session(
    *, max_in_flight: int, allowed_networks: Sequence[Network] = ()
) -> aiohttp.ClientSession:
    """The one HTTP session a relay shares across all deliveries: keep-alive connections,
    at most ``max_in_flight`` of them, no cookies, no proxies from the environment, and every
    connection's address checked by the SSRF guard (:mod:`pgcourier.netguard`)."""
    connector = aiohttp.TCPConnector(
        limit=max_in_flight,
        limit_per_host=0,
        ttl_dns_cache=60,
        socket_factory=AddressGuard(allowed_networks),
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"user-agent": USER_AGENT},
        trust_env=False,
    )


class WebhookTransport:
    """Signed webhooks over aiohttp, in each endpoint's signature scheme."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout: float,
        response_body_limit: int,
        max_timeout: float | None = None,
    ) -> None:
        """``timeout`` applies to endpoints without their own; ``max_timeout`` caps theirs (the
        relay passes half its lease, so a slow request never outlives the lease it runs under)."""
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_timeout = max_timeout
        self._body_limit = response_body_limit

    def _timeout_for(self, job: Job) -> aiohttp.ClientTimeout:
        if job.timeout is None:
            return self._timeout
        seconds = job.timeout
        if self._max_timeout is not None:
            seconds = min(seconds, self._max_timeout)
        return aiohttp.ClientTimeout(total=seconds)

    async def send(self, job: Job) -> AttemptResult:
        body = job.body()
        # Custom headers first, so the signature and content type always win (the database also
        # refuses custom headers with those names).
        headers = dict(job.headers)
        headers.update(
            sign_headers(job.signature_scheme, job.secrets, str(job.event_id), job.event_type, body)
        )
        headers["content-type"] = "application/json"
        timeout = self._timeout_for(job)
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        try:
            async with self._session.post(
                job.url,
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                # Read at most the limit: a huge or endless body must not stall the relay. The
                # connection is then closed instead of reused, which is the right price.
                raw = await response.content.read(self._body_limit) if self._body_limit else b""
                return AttemptResult(
                    started_at=started_at,
                    duration=time.perf_counter() - t0,
                    status=response.status,
                    response_body=raw.decode("utf-8", errors="replace"),
                    retry_after=response.headers.get("Retry-After"),
                )
        except TimeoutError:
            error = f"timeout after {timeout.total:g}s"
        except aiohttp.ClientConnectorError as exc:
            refused = exc.os_error if isinstance(exc.os_error, RefusedAddress) else None
            error = str(refused) if refused else f"{type(exc).__name__}: {exc}"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except (OSError, ValueError) as exc:  # e.g. an unresolvable or malformed URL
            error = f"{type(exc).__name__}: {exc}"
        return AttemptResult(started_at=started_at, duration=time.perf_counter() - t0, error=error)
