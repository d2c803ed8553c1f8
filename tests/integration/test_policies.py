"""Delivery policies against real receivers: classification, Retry-After, circuit breaking,
limits, ordering keys, the SSRF guard and per-endpoint signature schemes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from pgcourier import ops
from pgcourier.runtime import running
from pgcourier.signing import verify
from tests.integration.attempts import all_attempts
from tests.integration.helpers import relay_settings, statuses, wait_until

# Tests of what the HTTP transport itself promises run with each client (PGCOURIER_HTTP_CLIENT).
each_http_client = pytest.mark.parametrize("http_client", ["aiohttp", "reqwest"])


@dataclass
class Hit:
    path: str
    at: float
    headers: dict[str, str]
    body: bytes
    event_id: str


@dataclass
class Scripted:
    """A receiver whose answers are scripted per path: (status, headers, delay) in turn, then
    ``default``. Tracks how many requests each path has in flight, and the most at once."""

    base_url: str = ""
    hits: list[Hit] = field(default_factory=list)
    script: dict[str, list[tuple[int, dict[str, str], float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    default: tuple[int, dict[str, str], float] = (200, {}, 0.0)
    in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    peak: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    per_key_in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    per_key_peak: int = 0
    defaults: dict[str, tuple[int, dict[str, str], float]] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base_url + path

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.path
        event_id = (
            request.headers.get("webhook-id") or request.headers.get("x-webhook-event-id") or ""
        )
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.hits.append(Hit(path, time.monotonic(), headers, body, event_id))
        key = request.headers.get("X-Key")
        self.in_flight[path] += 1
        self.peak[path] = max(self.peak[path], self.in_flight[path])
        if key:
            self.per_key_in_flight[key] += 1
            self.per_key_peak = max(self.per_key_peak, self.per_key_in_flight[key])
        try:
            steps = self.script[path]
            status, headers, delay = (
                steps.pop(0) if steps else self.defaults.get(path, self.default)
            )
            if delay:
                await asyncio.sleep(delay)
            return web.Response(status=status, headers=headers, text="ok")
        finally:
            self.in_flight[path] -= 1
            if key:
                self.per_key_in_flight[key] -= 1

    def on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]


@pytest.fixture
async def rx(aiohttp_server: Any) -> Scripted:
    receiver = Scripted()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    app.router.add_get("/{tail:.*}", receiver.handle)  # where a followed 301-303 would land

    async def endless(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        for _ in range(100_000):  # about 100 MB if anyone read it all
            await response.write(b"x" * 1024)
        return response

    app.router.add_post("/endless", endless)
    server = await aiohttp_server(app)
    receiver.base_url = f"http://127.0.0.1:{server.port}"
    return receiver


async def endpoint(conn: asyncpg.Connection, url: str, **options: Any) -> dict[str, Any]:
    return await ops.create_endpoint(conn, url=url, event_types=["*"], **options)


async def delivery_row(conn: asyncpg.Connection, event_id: object) -> asyncpg.Record:
    return await conn.fetchrow(
        "SELECT status, attempts, last_error, next_attempt_at FROM courier.deliveries"
        " WHERE event_id = $1",
        event_id,
    )


@pytest.fixture
async def relays(dsn: str) -> AsyncIterator[Any]:
    """``await relays(n, **settings)`` starts n relays on the test database until the test ends."""
    async with AsyncExitStack() as stack:

        async def start(n: int = 1, **overrides: Any) -> list[Any]:
            return [
                await stack.enter_async_context(running(relay_settings(dsn, **overrides), dsn))
                for _ in range(n)
            ]

        yield start


# -- classification -------------------------------------------------------------------------


async def test_410_dead_letters_and_disables_the_endpoint_until_re_enabled(
    conn: asyncpg.Connection, rx: Scripted, relays: Any
) -> None:
    ep = await endpoint(conn, rx.url("/gone"))
    rx.script["/gone"] = [(410, {}, 0.0)]
    first = await ops.enqueue(conn, "a.b", {"n": 1})
    await relays(1, retry_schedule="50ms,50ms")
    await wait_until(lambda: _status_of(conn, first, "dead"))
    shown = await ops.get_endpoint(conn, ep["id"])
    assert shown["enabled"] is False
    assert shown["disabled_reason"] == "the receiver answered 410 Gone"
    # Later events wait (held, not lost) while the endpoint is disabled...
    second = await ops.enqueue(conn, "a.b", {"n": 2})
    await asyncio.sleep(0.5)
    assert len(rx.on("/gone")) == 1
    assert (await delivery_row(conn, second))["status"] == "pending"
    # ...and go once it is enabled again.
    await ops.set_endpoint_enabled(conn, ep["id"], True)
    await wait_until(lambda: _status_of(conn, second, "delivered"))


async def _status_of(conn: asyncpg.Connection, event_id: object, status: str) -> bool:
    row = await delivery_row(conn, event_id)
    return row is not None and row["status"] == status


async def test_permanent_statuses_dead_letter_at_once(
    conn: asyncpg.Connection, rx: Scripted, relays: Any
) -> None:
    await endpoint(conn, rx.url("/strict"), permanent_statuses=[400, 404])
    await endpoint(conn, rx.url("/lenient"))
    for path in ("/strict", "/lenient"):
        rx.defaults[path] = (404, {}, 0.0)
    event = await ops.enqueue(conn, "a.b", {})
    await relays(1, retry_schedule="100ms,100ms")
    await wait_until(lambda: _count(conn, "dead", 2), timeout=10)
    assert len(rx.on("/strict")) == 1  # dead at the first 404
    assert len(rx.on("/lenient")) == 3  # the schedule ran out
    attempts = await all_attempts(conn, str(event))
    assert {a["outcome"] for a in attempts if a["attempt"] == 1} == {"dead", "retry"}


async def _settled(conn: asyncpg.Connection, event_id: object) -> bool:
    row = await delivery_row(conn, event_id)
    return row is not None and row["status"] != "pending"


async def _count(conn: asyncpg.Connection, status: str, n: int) -> bool:
    return bool((await statuses(conn)).get(status) == n)


@each_http_client
async def test_retry_after_holds_the_delivery_and_the_whole_endpoint(
    conn: asyncpg.Connection, rx: Scripted, relays: Any, http_client: str
) -> None:
    ep = await endpoint(conn, rx.url("/busy"))
    rx.script["/busy"] = [(429, {"Retry-After": "2"}, 0.0)]
    first = await ops.enqueue(conn, "a.b", {"n": 1})
    await relays(1, retry_schedule="50ms", http_client=http_client)
    await wait_until(lambda: len(rx.on("/busy")) == 1)
    # Once the 429 is recorded, the endpoint is paused. (A delivery already claimed in the few
    # milliseconds before that still goes: the pause applies from when it is known.)
    await wait_until(lambda: _paused(conn, ep["id"]))
    second = await ops.enqueue(conn, "a.b", {"n": 2})  # would go at once but for the pause
    await wait_until(lambda: _count(conn, "delivered", 2), timeout=10)
    hits = rx.on("/busy")
    assert len(hits) == 3
    # Neither the retry (scheduled 50 ms later) nor the other event went before 2 s.
    assert min(h.at for h in hits[1:]) - hits[0].at >= 1.9
    stats = await ops.endpoint_stats(conn, ep["id"])
    assert stats["paused_until"] is None  # the pause is over
    # The 429'd event was retried after the pause, and the other went after it too.
    outcomes = {
        event: [a["outcome"] for a in await all_attempts(conn, str(event))]
        for event in (first, second)
    }
    assert outcomes == {first: ["retry", "delivered"], second: ["delivered"]}


async def _paused(conn: asyncpg.Connection, eid: str) -> bool:
    return (await ops.get_endpoint(conn, eid))["paused_until"] is not None


@each_http_client
async def test_a_huge_or_endless_response_body_is_read_only_up_to_the_limit(
    conn: asyncpg.Connection, rx: Scripted, relays: Any, http_client: str
) -> None:
    await endpoint(conn, rx.url("/endless"))
    event = await ops.enqueue(conn, "a.b", {})
    started = time.monotonic()
    await relays(1, delivery_timeout=5.0, response_body_limit=4096, http_client=http_client)
    await wait_until(lambda: _status_of(conn, event, "delivered"), timeout=10)
    assert time.monotonic() - started < 5
    [attempt] = await all_attempts(conn, str(event))
    assert attempt["response_body"] == "x" * 4096


async def test_endpoints_failing_continuously_are_disabled(
    conn: asyncpg.Connection, rx: Scripted, relays: Any
) -> None:
    ep = await endpoint(conn, rx.url("/down"))
    rx.defaults["/down"] = (500, {}, 0.0)
    for i in range(3):
        await ops.enqueue(conn, "a.b", {"i": i})
    await relays(1, retry_schedule="200ms,200ms,200ms,200ms,200ms", disable_after=0.5)
    await wait_until(lambda: _endpoint_field(conn, ep["id"], "enabled", False), timeout=10)
    shown = await ops.get_endpoint(conn, ep["id"])
    assert shown["disabled_reason"].startswith("failing continuously since")
    # Nothing lost: what was not dead yet waits for the endpoint to be enabled again.
    assert "pending" in await statuses(conn)


async def _endpoint_field(conn: asyncpg.Connection, eid: str, name: str, value: Any) -> bool:
    return bool((await ops.get_endpoint(conn, eid))[name] == value)


# -- circuit breaker ------------------------------------------------------------------------


async def test_circuit_opens_shared_by_two_relays_probes_then_closes(
    conn: asyncpg.Connection, rx: Scripted, relays: Any
) -> None:
    ep = await endpoint(conn, rx.url("/flaky"), max_in_flight=1)
    rx.defaults["/flaky"] = (500, {}, 0.0)
    for i in range(10):
        await ops.enqueue(conn, "a.b", {"i": i})
    started = await relays(
        2, retry_schedule="50ms,50ms,50ms,50ms,50ms", circuit_failures=3, circuit_cooldown=1.5
    )
    await wait_until(lambda: _endpoint_field(conn, ep["id"], "circuit_state", "open"))
    opened = time.monotonic()
    scrape = await _scrape(started[0].admin_port)
    assert "pgcourier_open_circuits 1.0" in scrape
    failures = len(rx.on("/flaky"))
    assert failures == 3  # max_in_flight=1: exactly the threshold, then the circuit holds
    await asyncio.sleep(1.0)
    assert len(rx.on("/flaky")) == failures  # neither relay sends while it is open
    # Held deliveries did not spend attempts.
    held = await conn.fetchval("SELECT count(*) FROM courier.deliveries WHERE attempts = 0")
    assert held >= 7
    # After the cool-down one probe goes; it fails, so the circuit opens again for longer.
    await wait_until(lambda: len(rx.on("/flaky")) == failures + 1, timeout=5)
    assert rx.on("/flaky")[-1].at - opened >= 1.4
    await asyncio.sleep(0.3)
    assert len(rx.on("/flaky")) == failures + 1  # one probe, not one per relay
    # The receiver recovers: the next probe succeeds, the circuit closes, everything goes.
    rx.defaults["/flaky"] = (200, {}, 0.0)
    await wait_until(lambda: _count(conn, "delivered", 10), timeout=15)
    shown = await ops.get_endpoint(conn, ep["id"])
    assert shown["circuit_state"] == "closed"
    assert shown["consecutive_failures"] == 0


async def _scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return await response.text()


# -- limits ---------------------------------------------------------------------------------


async def test_concurrency_limit_holds_across_two_relays(
    conn: asyncpg.Connection, rx: Scripted, relays: Any
) -> None:
    await endpoint(conn, rx.url("/slow"), max_in_flight=2)
    rx.defaults["/slow"] = (200, {}, 0.3)
    for i in range(8):
        await ops.enqueue(conn, "a.b", {"i": i})
    await relays(2)
    await wait_until(lambda: _count(conn, "delivered", 8), timeout=15)
    assert rx.peak["/slow"] == 2


async def test_a_slow_endpoint_does_not_hold_up_another(
    conn: asyncpg.Connection, rx: Scripted, relays: Any
) -> None:
    await ops.create_endpoint(conn, url=rx.url("/slow"), event_types=["slow.*"])
    await ops.create_endpoint(conn, url=rx.url("/fast"), event_types=["fast.*"])
    rx.defaults["/slow"] = (200, {}, 2.0)
    for i in range(40):  # four times the slow endpoint's concurrency
        await ops.enqueue(conn, "slow.x", {"i": i})
    await relays(1, max_in_flight=16)
    await wait_until(lambda: len(rx.on("/slow")) >= 10)
    sent = time.monotonic()
    await ops.enqueue(conn, "fast.x", {})
    await wait_until(lambda: len(rx.on("/fast")) == 1, timeout=5)
    assert rx.on("/fast")[0].at - sent < 1.0  # not behind the slow endpoint's backlog


async def test_rate_limit_spaces_requests(
    conn: asyncpg.Connection, rx: Scripted, relays: Any
) -> None:
    rate, n = 5, 20
    await endpoint(conn, rx.url("/metered"), rate_limit=rate)
    # The limiter spends its tokens when a claim leases a delivery, on the claim's clock
    # (now()): record that moment for every lease. Request start times carry the relay's own
    # jitter on top (on a slow machine a first claim's five requests left 0.1-0.4 s after it,
    # together with the next claim's two; their arrival times, 680 ms after it).
    await conn.execute(
        """
        CREATE TABLE leased_at (at timestamptz NOT NULL);
        CREATE FUNCTION log_lease() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO leased_at VALUES (now());
            RETURN NULL;
        END $$;
        CREATE TRIGGER log_lease AFTER INSERT OR UPDATE ON courier.queue FOR EACH ROW
            WHEN (NEW.lease_token IS NOT NULL) EXECUTE FUNCTION log_lease();
        """
    )
    for i in range(n):
        await ops.enqueue(conn, "a.b", {"i": i})
    await relays(2)
    await wait_until(lambda: _count(conn, "delivered", n), timeout=15)
    assert len(rx.on("/metered")) == n
    times = sorted(
        await conn.fetchval("SELECT array_agg(extract(epoch FROM at)::float8) FROM leased_at")
    )
    assert len(times) == n  # one lease each: none expired, none was taken twice
    # A full bucket of 5 at once, then 5 per second, shared by both relays: any run of k
    # consecutive leases spans at least (k - 5) / 5 seconds. One lease of slack absorbs the
    # claims' clocks (a claim's now() is its start; two relays' claims queue on the endpoint's
    # row); a refill 20% too fast is 2.5 leases over by the twentieth and fails.
    for i, j in itertools.combinations(range(n), 2):
        allowed = rate + rate * (times[j] - times[i]) + 1
        assert j - i + 1 <= allowed, (i, j, times[j] - times[i])
    # And the limit is a pace, not a stall: the last goes at about 3 s.
    assert times[-1] - times[0] < (n - rate) / rate + 1.0


# -- ordering keys --------------------------------------------------------------------------


async def test_ordering_keys_hold_commit_order_under_two_relays_and_failures(
    conn: asyncpg.Connection, rx: Scripted, relays: Any
) -> None:
    await endpoint(conn, rx.url("/ordered"), max_in_flight=50)
    events: dict[str, list[str]] = defaultdict(list)
    # Fail some first attempts so that heads retry while their followers wait.
    rx.script["/ordered"] = [(500, {}, 0.0), (200, {}, 0.0), (503, {}, 0.02)] * 4
    rx.default = (200, {}, 0.01)
    for n in range(60):
        key = f"k{n % 4}"
        event_id = await ops.enqueue(conn, "order.updated", {"n": n}, ordering_key=key)
        events[key].append(str(event_id))
    await relays(2, retry_schedule="100ms,100ms,100ms,100ms")
    await wait_until(lambda: _count(conn, "delivered", 60), timeout=30)
    by_event = {eid: key for key, ids in events.items() for eid in ids}
    # The last successful attempt of each event, per key, in receipt order: commit order.
    delivered_order: dict[str, list[str]] = defaultdict(list)
    attempts = await conn.fetch(
        "SELECT event_id::text, started_at FROM courier.attempts WHERE outcome = 'delivered'"
        " ORDER BY started_at"
    )
    for a in attempts:
        delivered_order[by_event[a["event_id"]]].append(a["event_id"])
    assert dict(delivered_order) == dict(events)
    # And never two of one key at once: every attempt of an event started after the previous
    # event of its key was delivered.
    starts = await conn.fetch(
        "SELECT event_id::text, min(started_at) AS first FROM courier.attempts GROUP BY 1"
    )
    first = {r["event_id"]: r["first"] for r in starts}
    done_at = {a["event_id"]: a["started_at"] for a in attempts}
    for ids in events.values():
        for earlier, later in itertools.pairwise(ids):
            assert first[later] >= done_at[earlier]


async def test_events_without_a_key_stay_parallel(
    conn: asyncpg.Connection, rx: Scripted, relays: Any
) -> None:
    await endpoint(conn, rx.url("/par"), max_in_flight=10)
    rx.defaults["/par"] = (200, {}, 0.3)
    for i in range(10):
        await ops.enqueue(conn, "a.b", {"i": i})
    await relays(1)
    await wait_until(lambda: _count(conn, "delivered", 10), timeout=10)
    assert rx.peak["/par"] >= 5


# -- SSRF guard -----------------------------------------------------------------------------


@each_http_client
async def test_ssrf_guard_refuses_a_name_resolving_to_loopback(
    conn: asyncpg.Connection, rx: Scripted, relays: Any, http_client: str
) -> None:
    port = rx.base_url.rsplit(":", 1)[1]
    await endpoint(conn, f"http://localhost:{port}/internal")
    event = await ops.enqueue(conn, "a.b", {})
    await relays(1, allow_networks="", retry_schedule="", http_client=http_client)
    await wait_until(lambda: _status_of(conn, event, "dead"))
    assert rx.on("/internal") == []
    [attempt] = await all_attempts(conn, str(event))
    assert "refused to connect" in attempt["error"]
    assert "loopback address" in attempt["error"]


@each_http_client
async def test_ssrf_guard_refuses_literal_private_and_metadata_addresses(
    conn: asyncpg.Connection, relays: Any, http_client: str
) -> None:
    await endpoint(conn, "http://169.254.169.254/latest/meta-data/")
    event = await ops.enqueue(conn, "a.b", {})
    await relays(1, allow_networks="127.0.0.0/8", retry_schedule="", http_client=http_client)
    await wait_until(lambda: _status_of(conn, event, "dead"))
    [attempt] = await all_attempts(conn, str(event))
    assert "169.254.169.254 is a link-local address" in attempt["error"]


@pytest.mark.parametrize("status", [302, 307])
@each_http_client
async def test_redirects_are_never_followed(
    conn: asyncpg.Connection, rx: Scripted, relays: Any, status: int, http_client: str
) -> None:
    # A redirect could send the signed body to a host the SSRF guard never saw named: the
    # endpoint's URL is the only one ever contacted. (A 307 would be followed with the POST and its
    # body; a 302 with a GET, which the receiver also records.)
    await endpoint(conn, rx.url("/moved"))
    rx.defaults["/moved"] = (status, {"Location": rx.url("/elsewhere")}, 0.0)
    event = await ops.enqueue(conn, "a.b", {})
    await relays(1, retry_schedule="", http_client=http_client)
    await wait_until(lambda: _settled(conn, event))
    assert [h.path for h in rx.hits] == ["/moved"]
    [attempt] = await all_attempts(conn, str(event))
    assert (attempt["status_code"], attempt["outcome"]) == (status, "dead")


# -- signature schemes ----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["github", "timestamped-hex", "stripe-style"])
async def test_each_scheme_signs_what_goes_on_the_wire(
    conn: asyncpg.Connection, rx: Scripted, relays: Any, scheme: str
) -> None:
    secret = "It's a Secret to Everybody"
    ep = await endpoint(conn, rx.url(f"/{scheme}"), signature_scheme=scheme, secret=secret)
    event = await ops.enqueue(conn, "order.paid", {"n": 1})
    await relays(1)
    await wait_until(lambda: len(rx.on(f"/{scheme}")) == 1)
    [hit] = rx.on(f"/{scheme}")
    verify(scheme, hit.headers, hit.body, secret)
    assert hit.headers["x-webhook-event"] == "order.paid"
    assert hit.headers["x-webhook-event-id"] == str(event)
    # Rotation: the new secret and the old one both verify during the grace period.
    rotated = await ops.rotate_secret(conn, ep["id"], secret="a-brand-new-secret-123")
    await ops.enqueue(conn, "order.paid", {"n": 2})
    await wait_until(lambda: len(rx.on(f"/{scheme}")) == 2)
    second = rx.on(f"/{scheme}")[1]
    verify(scheme, second.headers, second.body, secret)
    verify(scheme, second.headers, second.body, rotated["secret"])
