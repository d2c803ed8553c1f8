"""Webhook transport: one signed HTTP POST per attempt, returning a value, never raising."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

import aiohttp

from pgcourier import __version__
from pgcourier.model import ERROR_LIMIT, AttemptResult, Job, storable_text
from pgcourier.netguard import AddressGuard, Network, RefusedAddress
from pgcourier.signing import sign_headers

USER_AGENT = f"pgcourier/{__version__}"
#: The longest status line or header a receiver may send.
MAX_HEADER_LINE = 8190
#: How long a resolved address is used before the name is looked up again (aiohttp's DNS cache).
DNS_TTL = 60.0
#: The error of a response cut short before its head was whole (the same for every client).
CLOSED_EARLY = "connection closed by the receiver before the whole response arrived"
#: What a body read cut short by the request timeout is noted with.
BODY_TIMED_OUT = "the request timeout ran out while the body was arriving"


class Transport(Protocol):
    """Sends one attempt of a job. Implementations report failures in the result."""

    async def send(self, job: Job) -> AttemptResult: ...


def request_headers(job: Job, body: bytes) -> dict[str, str]:
    """The headers of one attempt: the endpoint's custom ones, then the signature and the
    content type, which always win (the database also refuses custom headers with those names)."""
    headers = dict(job.headers)
    headers.update(
        sign_headers(job.signature_scheme, job.secrets, str(job.event_id), job.event_type, body)
    )
    headers["content-type"] = "application/json"
    return headers


def timeout_for(job: Job, default: float, cap: float | None) -> float:
    """The request timeout of ``job``: the endpoint's own, capped at ``cap``, or ``default``."""
    if job.timeout is None:
        return default
    return job.timeout if cap is None else min(job.timeout, cap)


def response_text(raw: bytes, problem: str | None, limit: int) -> str:
    """The stored response body: its first ``limit`` bytes, plus a note when it was not read
    whole. The status is the receiver's answer (Standard Webhooks: a 2xx means it took the event)
    and decides the outcome; a body that stalls or is cut short after it only gets noted. Failing
    a 2xx there would send the event again."""
    text = storable_text(raw, limit)
    if problem is not None:
        note = storable_text(problem, ERROR_LIMIT, one_line=True)
        text = f"{text}\n[pgcourier: response body not read whole: {note}]"
    return text


def new_session(
    *, max_in_flight: int, allowed_networks: Sequence[Network] = ()
) -> aiohttp.ClientSession:
    """The one HTTP session a relay shares across all deliveries: keep-alive connections,
    at most ``max_in_flight`` of them, no cookies, no proxies from the environment, and every
    connection's address checked by the SSRF guard (:mod:`pgcourier.netguard`)."""
    connector = aiohttp.TCPConnector(
        limit=max_in_flight,
        limit_per_host=0,
        ttl_dns_cache=int(DNS_TTL),
        socket_factory=AddressGuard(allowed_networks),
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"user-agent": USER_AGENT},
        trust_env=False,
        # A receiver's response head is bounded (aiohttp's defaults, stated here because the
        # relay depends on them): a 10 MB header fails at 8 KiB as a failed attempt, and since
        # aiohttp 3.13.4 more than 128 header lines do too (max_headers).
        max_line_size=MAX_HEADER_LINE,
        max_field_size=MAX_HEADER_LINE,
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
        self._default_timeout = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_timeout = max_timeout
        self._body_limit = response_body_limit

    def _timeout_for(self, job: Job) -> aiohttp.ClientTimeout:
        if job.timeout is None:
            return self._timeout
        return aiohttp.ClientTimeout(
            total=timeout_for(job, self._default_timeout, self._max_timeout)
        )

    async def send(self, job: Job) -> AttemptResult:
        body = job.body()
        headers = request_headers(job, body)
        timeout = self._timeout_for(job)
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        # Everything below the request line comes from the receiver and may be hostile: any
        # text taken from it goes through storable_text (the database refuses NUL, and one
        # refused batch of outcomes used to hold every endpoint's, issue 15), and aiohttp's
        # limits bound what is read (8190-byte header lines, 128 headers, the request timeout).
        status = None  # set once the response head arrived
        try:
            async with self._session.post(
                job.url,
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                raw, problem = await _read_at_most(response.content, self._body_limit)
                return AttemptResult(
                    started_at=started_at,
                    duration=time.perf_counter() - t0,
                    status=status,
                    response_body=response_text(raw, problem, self._body_limit),
                    retry_after=response.headers.get("Retry-After"),
                )
        except TimeoutError:
            error = f"timeout after {timeout.total:g}s"
        except aiohttp.ClientConnectorError as exc:
            refused = exc.os_error if isinstance(exc.os_error, RefusedAddress) else None
            error = str(refused) if refused else f"{type(exc).__name__}: {exc}"
        except aiohttp.ServerDisconnectedError:
            # Its text is the repr of whatever part of the response had been parsed.
            error = CLOSED_EARLY
        except aiohttp.ClientResponseError as exc:
            # Raised by the response parser (a garbage status line, a header over the limits):
            # its "400" is aiohttp's own, not a status the receiver sent.
            error = f"invalid HTTP response: {exc.message}"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except (OSError, ValueError) as exc:  # e.g. an unresolvable or malformed URL
            error = f"{type(exc).__name__}: {exc}"
        return AttemptResult(
            started_at=started_at,
            duration=time.perf_counter() - t0,
            error=storable_text(error, ERROR_LIMIT, one_line=True),
        )


async def _read_at_most(content: aiohttp.StreamReader, limit: int) -> tuple[bytes, str | None]:
    """The body, or its first ``limit`` bytes when longer (a huge or endless body must not stall
    the relay; the connection is then closed instead of reused, which is the right price), and
    what went wrong reading it, if anything.

    One ``read(n)`` returns what has arrived so far, not n bytes: read until the limit or the
    end, so that a body cut short by a closed connection is noticed instead of passing for a
    complete response.
    """
    data = bytearray()
    try:
        while len(data) < limit:
            chunk = await content.read(limit - len(data))
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        return bytes(data), BODY_TIMED_OUT
    except aiohttp.ClientError as exc:  # e.g. ClientPayloadError: the connection closed mid-body
        return bytes(data), f"{type(exc).__name__}: {exc}"
    return bytes(data), None
