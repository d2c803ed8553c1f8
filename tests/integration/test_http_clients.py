"""The webhook transports, aiohttp and reqwest, keep the same promises (PGCOURIER_HTTP_CLIENT).

Driven at the transport, against real servers on loopback: the SSRF guard on the address
actually connected to (a name resolving to loopback, a name rebound after its lookup expired, a
host written in upper case or in Unicode), TLS verified, proxy variables ignored, an endpoint's
own timeout capped. The relay-level promises (hostile receivers, Retry-After, the body limit,
redirects) are in test_hostile_receiver.py and test_policies.py, run with both clients too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pgcourier.delivery import Transport, WebhookTransport, new_session
from pgcourier.delivery_reqwest import PinnedClients, ReqwestTransport
from pgcourier.model import ERROR_LIMIT, AttemptResult, Job
from pgcourier.netguard import Address, Network, parse_networks

HTTP_CLIENTS = ["aiohttp", "reqwest"]
LOOPBACK = parse_networks("127.0.0.0/8, ::1/128")


def job(url: str, *, timeout: float | None = None) -> Job:
    return Job(
        delivery_id=1,
        event_id=uuid.uuid4(),
        endpoint_id=uuid.uuid4(),
        attempts=0,
        schedule_base=0,
        event_type="order.paid",
        payload='{"n": 1}',
        created_at=dt.datetime.now(dt.UTC),
        url=url,
        secrets=("whsec_dGVzdHNlY3JldHRlc3RzZWNyZXQ=",),
        timeout=timeout,
    )


@asynccontextmanager
async def transport(
    client: str,
    *,
    allowed: Sequence[Network] = LOOPBACK,
    timeout: float = 2.0,
    max_timeout: float | None = None,
    clients: PinnedClients | None = None,
) -> AsyncIterator[Transport]:
    """A transport of the named client, as runtime.py builds it."""
    if client == "aiohttp":
        session = new_session(max_in_flight=8, allowed_networks=allowed)
        try:
            yield WebhookTransport(
                session, timeout=timeout, response_body_limit=4096, max_timeout=max_timeout
            )
        finally:
            await session.close()
        return
    clients = clients or PinnedClients(max_in_flight=8, allowed_networks=allowed)
    try:
        yield ReqwestTransport(
            clients, timeout=timeout, response_body_limit=4096, max_timeout=max_timeout
        )
    finally:
        await clients.close()


class Hits:
    def __init__(self) -> None:
        self.requests: list[web.Request] = []
        self.peers: list[Any] = []  # the (host, port) each request came from
        self.delay = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests.append(request)
        self.peers.append(request.transport and request.transport.get_extra_info("peername"))
        await asyncio.sleep(self.delay)
        return web.Response(text="ok")


@pytest.fixture
async def server(aiohttp_server: Any) -> tuple[Hits, int]:
    hits = Hits()
    app = web.Application()
    app.router.add_post("/{tail:.*}", hits.handle)
    srv = await aiohttp_server(app, host="127.0.0.1")
    return hits, int(srv.port)


def assert_failed(result: AttemptResult, *words: str) -> None:
    assert result.status is None, result
    assert result.error is not None
    assert "\n" not in result.error, result.error
    assert len(result.error) <= ERROR_LIMIT
    for word in words:
        assert word in result.error, result.error


# -- SSRF guard -----------------------------------------------------------------------------


@pytest.mark.parametrize("client", HTTP_CLIENTS)
async def test_a_name_resolving_to_loopback_is_refused(
    client: str, server: tuple[Hits, int]
) -> None:
    hits, port = server
    async with transport(client, allowed=()) as t:
        result = await t.send(job(f"http://localhost:{port}/internal"))
    # The same words with both clients: netguard's RefusedAddress text.
    assert_failed(result, "refused to connect: ", "is a loopback address", "ALLOW_NETWORKS")
    assert hits.requests == []


@pytest.mark.parametrize("client", HTTP_CLIENTS)
@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local"),
        ("http://[::ffff:10.0.0.1]/", "10.0.0.1 is a private"),
        ("http://0x7f.1:9/", "127.0.0.1 is a loopback"),  # WHATWG: 0x7f.1 is 127.0.0.1
    ],
)
async def test_ip_literals_are_judged_without_a_lookup(client: str, url: str, words: str) -> None:
    async with transport(client, allowed=()) as t:
        result = await t.send(job(url))
    assert_failed(result, "refused to connect: ", words)


class Rebinding:
    """A resolver whose answers the test changes between lookups (a DNS-rebinding attacker's
    name), recording the names it was asked."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = [ipaddress.ip_address(a) for a in addresses]
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[Address]:
        self.asked.append(host)
        return list(self.addresses)


async def test_a_name_rebound_to_a_refused_address_is_refused_once_its_lookup_expires(
    server: tuple[Hits, int],
) -> None:
    hits, port = server
    dns = Rebinding("127.0.0.1")
    only_one = parse_networks("127.0.0.1/32")  # 127.0.0.2 is loopback, and refused
    clients = PinnedClients(max_in_flight=8, allowed_networks=only_one, dns_ttl=0.2, lookup=dns)
    async with transport("reqwest", clients=clients) as t:
        first = await t.send(job(f"http://rebind.test:{port}/a"))
        assert first.status == 200, first
        dns.addresses = [ipaddress.ip_address("127.0.0.2")]
        second = await t.send(job(f"http://rebind.test:{port}/b"))
        assert second.status == 200  # within the TTL: still the address judged before
        await asyncio.sleep(0.3)
        third = await t.send(job(f"http://rebind.test:{port}/c"))
    assert_failed(third, "refused to connect: 127.0.0.2 is a loopback address")
    assert [r.path for r in hits.requests] == ["/a", "/b"]
    assert dns.asked == ["rebind.test", "rebind.test"]


async def test_the_first_allowed_address_is_used_when_some_are_refused(
    server: tuple[Hits, int],
) -> None:
    hits, port = server
    dns = Rebinding("127.0.0.2", "169.254.169.254", "127.0.0.1")
    clients = PinnedClients(
        max_in_flight=8, allowed_networks=parse_networks("127.0.0.1/32"), lookup=dns
    )
    async with transport("reqwest", clients=clients) as t:
        result = await t.send(job(f"http://mixed.test:{port}/"))
    assert result.status == 200, result
    assert len(hits.requests) == 1
    # Every address refused: the first one's reason, as aiohttp's socket factory words it.
    dns.addresses = dns.addresses[:2]
    clients = PinnedClients(
        max_in_flight=8, allowed_networks=parse_networks("127.0.0.1/32"), lookup=dns
    )
    async with transport("reqwest", clients=clients) as t:
        refused = await t.send(job(f"http://mixed.test:{port}/"))
    assert_failed(refused, "refused to connect: 127.0.0.2 is a loopback address")


@pytest.mark.parametrize(
    ("host", "looked_up"),
    [
        ("REBIND.Test", "rebind.test"),
        ("bücher.test", "xn--bcher-kva.test"),
        ("rebind.test.", "rebind.test."),
    ],
)
async def test_the_name_pinned_is_the_name_reqwest_connects_to(
    server: tuple[Hits, int], host: str, looked_up: str
) -> None:
    """reqwest would resolve any name it has no pin for itself, unjudged: the pin must be
    keyed by the host exactly as reqwest writes it. (.test names do not resolve, so a request
    that arrives went through the pin.)"""
    hits, port = server
    dns = Rebinding("127.0.0.1")
    clients = PinnedClients(max_in_flight=8, allowed_networks=LOOPBACK, lookup=dns)
    async with transport("reqwest", clients=clients) as t:
        result = await t.send(job(f"http://{host}:{port}/x"))
    assert result.status == 200, result
    assert dns.asked == [looked_up]
    assert len(hits.requests) == 1


async def test_one_lookup_serves_concurrent_sends(server: tuple[Hits, int]) -> None:
    hits, port = server
    dns = Rebinding("127.0.0.1")
    clients = PinnedClients(max_in_flight=8, allowed_networks=LOOPBACK, lookup=dns)
    async with transport("reqwest", clients=clients) as t:
        results = await asyncio.gather(
            *(t.send(job(f"http://many.test:{port}/{i}")) for i in range(20))
        )
    assert {r.status for r in results} == {200}
    assert len(hits.requests) == 20
    assert dns.asked == ["many.test"]


@pytest.mark.parametrize("client", HTTP_CLIENTS)
async def test_an_unresolvable_name_is_a_one_line_error(client: str) -> None:
    async with transport(client) as t:
        result = await t.send(job("http://no-such-host.invalid/"))
    assert_failed(result)


# -- TLS, proxies, timeouts -----------------------------------------------------------------


def self_signed(directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


@pytest.mark.parametrize("client", HTTP_CLIENTS)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_tls_certificates_are_verified(
    client: str, host: str, aiohttp_server: Any, tmp_path: Path
) -> None:
    hits = Hits()
    app = web.Application()
    app.router.add_post("/{tail:.*}", hits.handle)
    srv = await aiohttp_server(app, host="127.0.0.1", ssl=self_signed(tmp_path))
    async with transport(client) as t:
        result = await t.send(job(f"https://{host}:{srv.port}/hook"))
    assert_failed(result, "certificate")
    assert hits.requests == []


@pytest.mark.parametrize("client", HTTP_CLIENTS)
async def test_proxy_variables_are_ignored(
    client: str, server: tuple[Hits, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    hits, port = server
    asked: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(await reader.readline())  # what a proxy would be asked for, then hang up
        writer.close()

    proxy_server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    proxy_url = f"http://127.0.0.1:{proxy_server.sockets[0].getsockname()[1]}"
    try:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with transport(client) as t:
            result = await t.send(job(f"http://localhost:{port}/direct"))
    finally:
        proxy_server.close()
        await proxy_server.wait_closed()
    assert result.status == 200, result
    assert asked == []
    assert len(hits.requests) == 1


@pytest.mark.parametrize("client", HTTP_CLIENTS)
async def test_an_endpoints_own_timeout_is_capped(client: str, server: tuple[Hits, int]) -> None:
    hits, port = server
    hits.delay = 5.0
    async with transport(client, timeout=10.0, max_timeout=0.5) as t:
        started = time.monotonic()
        result = await t.send(job(f"http://127.0.0.1:{port}/slow", timeout=30.0))
    assert time.monotonic() - started < 2.0
    assert_failed(result, "timeout after 0.5s")


@pytest.mark.parametrize("client", HTTP_CLIENTS)
async def test_what_goes_on_the_wire(client: str, server: tuple[Hits, int]) -> None:
    """The same request with either client: signed, JSON, our user agent, header names as
    written, no compression asked for that the body limit would then have to undo."""
    hits, port = server
    async with transport(client) as t:
        result = await t.send(job(f"http://127.0.0.1:{port}/wire"))
    assert (result.status, result.response_body) == (200, "ok")
    [request] = hits.requests
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("pgcourier/")
    raw_names = {name.decode() for name, _ in request.raw_headers}
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= raw_names
    if client == "reqwest":
        assert "accept-encoding" not in {n.lower() for n in raw_names}


async def test_a_pinned_address_still_in_the_answer_keeps_its_connections(
    server: tuple[Hits, int],
) -> None:
    """Round-robin DNS reorders its answers: while the pinned address is still among them and
    allowed, the client (its keep-alive connection) is kept, not rebuilt."""
    hits, port = server
    dns = Rebinding("127.0.0.1")
    clients = PinnedClients(max_in_flight=8, allowed_networks=LOOPBACK, dns_ttl=0.1, lookup=dns)
    async with transport("reqwest", clients=clients) as t:
        assert (await t.send(job(f"http://rr.test:{port}/a"))).status == 200
        dns.addresses = [ipaddress.ip_address("127.0.0.2"), ipaddress.ip_address("127.0.0.1")]
        await asyncio.sleep(0.2)
        assert (await t.send(job(f"http://rr.test:{port}/b"))).status == 200
    assert dns.asked == ["rr.test", "rr.test"]
    # One TCP connection served both: the same client port.
    assert len(hits.peers) == 2
    assert hits.peers[0] is not None
    assert hits.peers[0] == hits.peers[1]


async def test_an_unreachable_pinned_address_gives_way_to_another(
    server: tuple[Hits, int],
) -> None:
    """aiohttp tries each allowed address in turn; the reqwest transport pins one, so an
    address that refuses connections must not stay pinned while the name has others."""
    hits, port = server
    dns = Rebinding("127.0.0.2", "127.0.0.1")  # nothing listens on 127.0.0.2
    clients = PinnedClients(max_in_flight=8, allowed_networks=LOOPBACK, lookup=dns)
    async with transport("reqwest", clients=clients) as t:
        first = await t.send(job(f"http://two.test:{port}/a"))
        second = await t.send(job(f"http://two.test:{port}/b"))
    assert_failed(first, "Connection refused")
    assert second.status == 200, second
    assert [r.path for r in hits.requests] == ["/b"]
