"""Hostile receivers: whatever a receiver sends back must never stop the relay (issue 15).

A raw asyncio TCP server plays the receiver, so it can answer with any bytes at all: NUL bytes,
invalid UTF-8, a 10 MB header, a garbage status line, a body that never ends, a connection closed
mid-response, an unreadable Retry-After. Each case runs a real relay on real Postgres with the
hostile endpoint beside a healthy one, with each HTTP client (``PGCOURIER_HTTP_CLIENT``: aiohttp
and reqwest keep the same promises), and checks that:

* the healthy endpoint's deliveries are recorded as delivered promptly, each sent once;
* every hostile attempt is recorded in courier.attempts, with a status, error and body a human
  can read (one-line errors, bounded lengths, bad bytes shown as U+FFFD);
* no delivery is left pending or leased;
* leaving the ``async with relay()`` block (what SIGTERM does) returns within the shutdown
  timeout.

The last test goes behind the transport's cleaning: text Postgres refuses that reaches the
completion writer anyway is recorded as a failed attempt, and everyone else's outcomes with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from pgcourier import ops
from pgcourier.model import ERROR_LIMIT, AttemptResult, Job
from pgcourier.relay import Relay, RelayConfig
from pgcourier.store import CircuitConfig, PgStore
from tests.integration.helpers import Receiver, add_endpoint, wait_until

EVENTS = 3
SHUTDOWN_TIMEOUT = 3.0
BODY_LIMIT = 4096  # the default response_body_limit
# Settings under test: quick retries (three attempts in all), a short request timeout.
SETTINGS: dict[str, Any] = {
    "retry_schedule": "100ms,200ms",
    "delivery_timeout": 1.0,
    "shutdown_timeout": SHUTDOWN_TIMEOUT,
    "response_body_limit": BODY_LIMIT,
}

HTTP_CLIENTS = ["aiohttp", "reqwest"]

Respond = Callable[[asyncio.StreamWriter], Awaitable[None]]


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def nul_body(w: asyncio.StreamWriter) -> None:
    await _send(w, b"HTTP/1.1 500 Oops\r\nContent-Length: 8\r\n\r\nbad\x00body")


async def invalid_utf8(w: asyncio.StreamWriter) -> None:
    body = b"caf\xc3 \xff\xfe ok"
    await _send(
        w, b"HTTP/1.1 500 Oops\r\nX-Junk: \xff\xfe\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    await _send(w, body)


async def huge_header(w: asyncio.StreamWriter) -> None:
    await _send(w, b"HTTP/1.1 200 OK\r\nX-Big: " + b"a\x00" * (5 * 1024 * 1024))
    await _send(w, b"\r\nContent-Length: 0\r\n\r\n")


async def huge_valid_header(w: asyncio.StreamWriter) -> None:
    # Valid characters only, so it is the size that must stop the client, not a bad byte.
    await _send(w, b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (10 * 1024 * 1024))
    await _send(w, b"\r\nContent-Length: 0\r\n\r\n")


async def too_many_headers(w: asyncio.StreamWriter) -> None:
    # Each line short, the head complete: only the number of headers is out of bounds.
    await _send(w, b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(1000)))
    await _send(w, b"Content-Length: 0\r\n\r\n")


async def garbage_status(w: asyncio.StreamWriter) -> None:
    await _send(w, b"\x00\xff garbage \x00\xc3 status line\r\n\r\n")


async def endless_body(w: asyncio.StreamWriter) -> None:
    await _send(w, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:  # ends when the relay hangs up (ConnectionResetError)
        await _send(w, b"1000\r\n" + b"\x00\xff" * 2048 + b"\r\n")


async def closed_mid_body(w: asyncio.StreamWriter) -> None:
    await _send(w, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it")


async def closed_mid_body_500(w: asyncio.StreamWriter) -> None:
    await _send(w, b"HTTP/1.1 500 Oops\r\nContent-Length: 100\r\n\r\nonly part of it")


async def stalled_body(w: asyncio.StreamWriter) -> None:
    await _send(w, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nslow")
    await asyncio.sleep(30)  # past the request timeout: the relay hangs up first


async def closed_mid_headers(w: asyncio.StreamWriter) -> None:
    await _send(w, b"HTTP/1.1 200 OK\r\nContent-Le")


async def endless_headers(w: asyncio.StreamWriter) -> None:
    await _send(w, b"HTTP/1.1 200 OK\r\n")
    while True:  # a byte at a time: never too long, never finished
        await _send(w, b"X")
        await asyncio.sleep(0.05)


async def retry_after_digits(w: asyncio.StreamWriter) -> None:
    # More digits than Python converts to an int (4300) and more than a float holds.
    await _send(w, b"HTTP/1.1 503 Busy\r\nRetry-After: " + b"9" * 5000 + b"\r\n")
    await _send(w, b"Content-Length: 0\r\n\r\n")


async def retry_after_superscript(w: asyncio.StreamWriter) -> None:
    # "²" is a digit to str.isdigit() but not to int().
    await _send(w, b"HTTP/1.1 429 Slow down\r\nRetry-After: \xc2\xb2\r\nContent-Length: 0\r\n\r\n")


# Behaviours whose response is whole and well framed (the hostile part is in what it holds).
WHOLE_RESPONSES: set[Respond] = {
    nul_body,
    invalid_utf8,
    retry_after_digits,
    retry_after_superscript,
}


@dataclass(frozen=True)
class Case:
    respond: Respond
    delivered: bool  # the outcome every attempt should have: delivered, or a failure
    check: Callable[[asyncpg.Record], bool]  # what each recorded attempt must look like
    # What it must look like with reqwest, where hyper words an error differently.
    reqwest_check: Callable[[asyncpg.Record], bool] | None = None

    @property
    def path(self) -> str:
        return "/" + self.respond.__name__


def _error_has(*words: str) -> Callable[[asyncpg.Record], bool]:
    return lambda a: a["error"] is not None and all(w in a["error"] for w in words)


CASES = [
    Case(
        nul_body, False, lambda a: a["status_code"] == 500 and a["response_body"] == "bad\ufffdbody"
    ),
    Case(
        invalid_utf8,
        False,
        lambda a: a["status_code"] == 500 and a["response_body"] == "caf\ufffd \ufffd\ufffd ok",
    ),
    Case(
        huge_header,
        False,
        _error_has("invalid HTTP response", "8190 bytes"),
        _error_has("invalid HTTP response", "header"),
    ),
    Case(
        huge_valid_header,
        False,
        _error_has("invalid HTTP response", "8190 bytes"),
        _error_has("invalid HTTP response", "too large"),
    ),
    Case(
        too_many_headers,
        False,
        _error_has("invalid HTTP response", "headers"),
        _error_has("invalid HTTP response", "too large"),
    ),
    Case(
        garbage_status,
        False,
        _error_has("invalid HTTP response", "status line"),
        _error_has("invalid HTTP response", "version"),
    ),
    Case(
        endless_body,
        True,
        lambda a: a["status_code"] == 200 and a["response_body"] == "\ufffd" * BODY_LIMIT,
    ),
    # A status decides the outcome even when the body after it breaks: a 2xx is the receiver
    # saying it took the event, so failing it would only send the event again.
    Case(
        closed_mid_body,
        True,
        lambda a: (
            a["status_code"] == 200
            and a["error"] is None
            and a["response_body"].startswith("only part of it\n[pgcourier: response body not")
        ),
    ),
    Case(
        closed_mid_body_500,
        False,
        lambda a: a["status_code"] == 500 and "not read whole" in a["response_body"],
    ),
    Case(
        stalled_body,
        True,
        lambda a: (
            a["status_code"] == 200
            and a["response_body"].startswith("slow")
            and "timeout" in a["response_body"]
        ),
    ),
    Case(closed_mid_headers, False, _error_has("connection closed", "before the whole response")),
    Case(endless_headers, False, _error_has("timeout after 1s")),
    Case(retry_after_digits, False, lambda a: a["status_code"] == 503 and a["error"] is None),
    Case(retry_after_superscript, False, lambda a: a["status_code"] == 429),
]


class HostileServer:
    """Reads each request whole, then answers with the behaviour named by its path."""

    def __init__(self) -> None:
        self.base_url = ""
        self.hits: dict[str, int] = {}
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._behaviours = {case.path: case.respond for case in CASES}

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:  # endless behaviours end when their connection does
            writer.transport.abort()
        for handler in self._handlers:  # and sleeping ones (stalled_body) when cancelled,
            handler.cancel()  # rather than 30 s later at every test's teardown
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.hits[path] = self.hits.get(path, 0) + 1
                behaviour = self._behaviours[path]
                await behaviour(writer)
                if behaviour not in WHOLE_RESPONSES:
                    break
                # A whole, well-framed response: the connection stays open for the next
                # request, as a real server's would. (Reset right after the response, a
                # pooled connection can fail the next request sent on it, to another case.)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the relay hung up on us: that is the point
        finally:
            writer.transport.abort()
            self._writers.discard(writer)


@pytest.fixture
async def hostile() -> AsyncIterator[HostileServer]:
    server = HostileServer()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def _hostile_run(
    conn: asyncpg.Connection,
    relay: Callable[..., contextlib.AbstractAsyncContextManager[Any]],
    receiver: Receiver,
    hostile: HostileServer,
    cases: list[Case],
    http_client: str,
) -> dict[str, str]:
    """Run one relay over a healthy endpoint and one endpoint per case; return the endpoint
    ids of the cases by path, once the relay has stopped (within its deadline)."""
    healthy = await add_endpoint(conn, receiver.url("/healthy"))
    endpoints = {c.path: str((await add_endpoint(conn, hostile.url(c.path)))["id"]) for c in cases}
    for i in range(EVENTS):
        await ops.enqueue(conn, "order.paid", {"n": i})
    loop = asyncio.get_running_loop()
    stack = contextlib.AsyncExitStack()
    await stack.enter_async_context(relay(**SETTINGS, http_client=http_client))
    try:
        await receiver.wait_count(EVENTS, "/healthy", timeout=5)

        async def healthy_recorded() -> bool:
            n = await conn.fetchval(
                "SELECT count(*) FROM courier.deliveries"
                " WHERE endpoint_id = $1 AND status = 'delivered'",
                healthy["id"],
            )
            return bool(n == EVENTS)

        await wait_until(healthy_recorded, timeout=5)

        # Every hostile delivery ends delivered or dead (three attempts at most, each bounded
        # by the delivery timeout), none left pending.
        async def all_settled() -> bool:
            n = await conn.fetchval(
                "SELECT count(*) FROM courier.deliveries WHERE status = 'pending'"
            )
            return bool(n == 0)

        await wait_until(all_settled, timeout=20)
    finally:
        # What SIGTERM does: stop, drain, hand back, return; bounded whatever happened above.
        started = loop.time()
        async with asyncio.timeout(SHUTDOWN_TIMEOUT + 3):
            await stack.aclose()
        stopped_in = loop.time() - started
    assert stopped_in < SHUTDOWN_TIMEOUT
    assert receiver.ids("/healthy").most_common(1)[0][1] == 1  # each sent exactly once
    assert (
        await conn.fetchval("SELECT count(*) FROM courier.deliveries WHERE lease_token IS NOT NULL")
        == 0
    )
    return endpoints


async def _check_attempts(
    conn: asyncpg.Connection, case: Case, endpoint_id: str, http_client: str
) -> None:
    check = case.reqwest_check if http_client == "reqwest" and case.reqwest_check else case.check
    deliveries = await conn.fetch(
        "SELECT id, status, attempts FROM courier.deliveries WHERE endpoint_id = $1",
        endpoint_id,
    )
    assert len(deliveries) == EVENTS
    expected_status = "delivered" if case.delivered else "dead"
    assert {d["status"] for d in deliveries} == {expected_status}, case.path
    attempts = await conn.fetch(
        "SELECT delivery_id, status_code, error, response_body, outcome"
        " FROM courier.attempts WHERE endpoint_id = $1",
        endpoint_id,
    )
    # Each attempt recorded once: as many rows as the deliveries counted.
    assert len(attempts) == sum(d["attempts"] for d in deliveries), case.path
    for a in attempts:
        assert (a["outcome"] == "delivered") is case.delivered, (case.path, dict(a))
        assert check(a), (case.path, http_client, dict(a))
        if a["error"] is not None:
            assert len(a["error"]) <= ERROR_LIMIT, dict(a)
            assert "\n" not in a["error"], dict(a)  # errors are read in log lines
        if a["response_body"] is not None:
            assert len(a["response_body"]) <= BODY_LIMIT, case.path


@pytest.mark.parametrize("http_client", HTTP_CLIENTS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.path.strip("/"))
async def test_a_hostile_receiver_never_stalls_the_relay(
    conn: asyncpg.Connection,
    relay: Callable[..., contextlib.AbstractAsyncContextManager[Any]],
    receiver: Receiver,
    hostile: HostileServer,
    case: Case,
    http_client: str,
) -> None:
    endpoints = await _hostile_run(conn, relay, receiver, hostile, [case], http_client)
    assert hostile.hits[case.path] >= EVENTS
    await _check_attempts(conn, case, endpoints[case.path], http_client)


@pytest.mark.parametrize("http_client", HTTP_CLIENTS)
async def test_all_hostile_receivers_at_once_leave_the_healthy_one_alone(
    conn: asyncpg.Connection,
    relay: Callable[..., contextlib.AbstractAsyncContextManager[Any]],
    receiver: Receiver,
    hostile: HostileServer,
    http_client: str,
) -> None:
    """Their outcomes share completion batches with the healthy endpoint's: one refused batch
    must not hold back anyone else's."""
    endpoints = await _hostile_run(conn, relay, receiver, hostile, CASES, http_client)
    for case in CASES:
        await _check_attempts(conn, case, endpoints[case.path], http_client)


class LeakyTransport:
    """A transport that does not clean what it passes on (slack.py's error text comes from the
    Slack API's JSON, where "\\u0000" is a NUL): the completion writer is the last line."""

    def __init__(self, leaky_endpoint: str) -> None:
        self.leaky_endpoint = leaky_endpoint

    async def send(self, job: Job) -> AttemptResult:
        leaky = str(job.endpoint_id) == self.leaky_endpoint
        return AttemptResult(
            started_at=datetime.now(UTC),
            duration=0.001,
            status=200,
            response_body="bad\x00body" if leaky else "ok",
        )


async def test_the_completion_writer_records_what_postgres_refuses_as_a_failure(
    conn: asyncpg.Connection, dsn: str
) -> None:
    healthy = await add_endpoint(conn, "http://127.0.0.1:1/healthy")
    leaky = await add_endpoint(conn, "http://127.0.0.1:1/leaky")
    for i in range(EVENTS):
        await ops.enqueue(conn, "order.paid", {"n": i})
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    stop = asyncio.Event()
    config = RelayConfig(retry_schedule=(0.1, 0.2), retry_jitter=0, poll_interval=0.1)
    store = PgStore(pool, CircuitConfig(failures=1000))  # retries undisturbed by the circuit
    relay = Relay(store=store, transport=LeakyTransport(str(leaky["id"])), config=config)
    task = asyncio.create_task(relay.run(stop))
    try:

        async def settled() -> bool:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, count(*) FILTER (WHERE status = 'pending') AS pending"
                " FROM courier.deliveries"
            )
            return bool(row["n"] == 2 * EVENTS and row["pending"] == 0)

        await wait_until(settled, timeout=10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await pool.close()
    rows = await conn.fetch(
        "SELECT endpoint_id, status, count(*) AS n, sum(attempts) AS attempts"
        " FROM courier.deliveries GROUP BY 1, 2"
    )
    assert {(str(r["endpoint_id"]), r["status"], r["n"], r["attempts"]) for r in rows} == {
        (healthy["id"], "delivered", EVENTS, EVENTS),
        (leaky["id"], "dead", EVENTS, 3 * EVENTS),  # failures, on the retry schedule
    }
    attempts = await conn.fetch(
        "SELECT status_code, error, response_body FROM courier.attempts WHERE endpoint_id = $1",
        leaky["id"],
    )
    assert len(attempts) == 3 * EVENTS  # each recorded once
    assert {tuple(a) for a in attempts} == {
        (200, 'response not storable: invalid byte sequence for encoding "UTF8": 0x00', None)
    }
