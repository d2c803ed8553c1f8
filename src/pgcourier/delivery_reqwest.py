"""Webhook transport over pyreqwest (Rust reqwest and hyper): the promises of the aiohttp one in
:mod:`pgcourier.delivery`, at about half its CPU per request (issue 11).

The SSRF guard has to judge the address actually connected to, and reqwest has no hook where
that address can be seen. So reqwest never resolves a name: the transport looks the host up
itself, judges every address with :func:`pgcourier.netguard.refusal`, and sends through a client
pinned to the first allowed address with ``ClientBuilder.resolve(host, ip, port)`` (reqwest's
static DNS override, which takes the place of its resolver for that one name). A pin lasts
``DNS_TTL`` seconds, as aiohttp's DNS cache does; the name is then looked up and judged again and
the client kept when the address is unchanged, so keep-alive connections survive the refresh.
The host string is the one reqwest's own URL parser gives (``pyreqwest.http.Url``: lower case,
IDNA to punycode, ``0x7f.1`` to ``127.0.0.1``), so the name pinned is the name reqwest looks for;
an IP-literal URL is judged directly and needs no pin.

Everything else is the aiohttp transport's contract: no redirects, no proxies (not even from the
environment), TLS verified (reqwest's default, never turned off here), a total timeout per
request with the endpoint's own capped, at most ``response_body_limit`` bytes of the body read
and a stalled or cut body only noted, and a bounded response head (hyper refuses a head over
~400 KiB or with more than 100 headers). Responses are not decompressed (no Accept-Encoding is
sent): the body is kept for humans, and decompressing would cost CPU on every delivery.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import (
    DecodeError,
    PyreqwestError,
    RequestError,
    RequestTimeoutError,
)
from pyreqwest.http import Url
from pyreqwest.response import ResponseBodyReader

from pgcourier.delivery import (
    BODY_TIMED_OUT,
    CLOSED_EARLY,
    DNS_TTL,
    USER_AGENT,
    request_headers,
    response_text,
    timeout_for,
)
from pgcourier.model import ERROR_LIMIT, AttemptResult, Job, storable_text
from pgcourier.netguard import Address, Network, RefusedAddress, refusal

#: A pin unused this long is dropped with its client (its connections close with it).
IDLE_PIN = 5 * DNS_TTL
# hyper-util's stage name for a failure to connect (TCP or TLS), before anything was sent.
_CONNECTING = "client error (Connect)"
# hyper's words for a connection closed before the response head was whole.
_HYPER_CLOSED_EARLY = "connection closed before message completed"

_KEEP_ALIVE = timedelta(seconds=15)
#: URLs whose pin keys are remembered (then forgotten all at once: parsing again is cheap).
_MAX_URLS = 10_000

PinKey = tuple[str, str, int]  # (scheme, host as reqwest writes it, port)
Lookup = Callable[[str, int], Awaitable[Sequence[Address]]]


@dataclass(slots=True)
class _Pin:
    client: Client
    address: Address
    expires: float  # time.monotonic()


class PinnedClients:
    """reqwest clients, one per (scheme, host, port), each pinned to an address the SSRF guard
    allowed when the name was last looked up."""

    def __init__(
        self,
        *,
        max_in_flight: int,
        allowed_networks: Sequence[Network] = (),
        dns_ttl: float = DNS_TTL,
        lookup: Lookup | None = None,
    ) -> None:
        """``lookup(host, port)`` gives a host's addresses (the system resolver by default; tests
        play a name rebound to another address with their own)."""
        self._allowed = tuple(allowed_networks)
        self._max_in_flight = max_in_flight
        self._ttl = dns_ttl
        self._lookup = lookup or _lookup
        self._pins: dict[PinKey, _Pin] = {}
        self._keys: dict[str, PinKey] = {}
        self._unreachable: dict[PinKey, Address] = {}  # a pinned address that failed to connect
        # One lookup per name at a time: 64 sends to one host share the refresh.
        self._lookups: dict[PinKey, asyncio.Task[_Pin]] = {}

    def ready(self, url: str) -> Client | None:
        """The client for ``url`` when its host's pin is fresh, else None (then await
        :meth:`client_for`). No await on the way: this is every delivery's path."""
        pin = self._pins.get(self._key(url))
        if pin is not None and pin.expires > time.monotonic():
            return pin.client
        return None

    async def client_for(self, url: str) -> Client:
        """The client to send ``url`` through, its host looked up and judged when its pin is
        stale; :class:`RefusedAddress` when the guard allows no address of the host,
        :class:`OSError` when the name does not resolve."""
        key = self._key(url)
        pin = self._pins.get(key)
        if pin is not None and pin.expires > time.monotonic():
            return pin.client
        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = asyncio.get_running_loop().create_task(self._pin(key, pin))
            self._lookups[key] = lookup
            lookup.add_done_callback(lambda done: self._looked_up(key, done))
        # Shielded: a sender that gives up (its timeout) must not cancel the others' lookup.
        return (await asyncio.shield(lookup)).client

    def connect_failed(self, url: str) -> None:
        """A connection to ``url``'s pinned address failed: look the host up again on the next
        send, and pin another allowed address if it has one."""
        key = self._key(url)
        pin = self._pins.get(key)
        if pin is not None:
            self._unreachable[key] = pin.address
            pin.expires = 0.0

    def _key(self, url: str) -> PinKey:
        """(scheme, host, port) of ``url`` as reqwest's own parser reads it, remembered per URL
        (a relay sends to few URLs, many times)."""
        key = self._keys.get(url)
        if key is None:
            parsed = Url(url)
            host, port = parsed.host_str, parsed.port_or_known_default
            if host is None or port is None or parsed.scheme not in ("http", "https"):
                raise ValueError("not an http(s) URL with a host")  # the URL may hold tokens
            key = (parsed.scheme, host, port)
            if len(self._keys) >= _MAX_URLS:
                self._keys.clear()
            self._keys[url] = key
        return key

    def _looked_up(self, key: PinKey, lookup: asyncio.Task[_Pin]) -> None:
        self._lookups.pop(key, None)
        if not lookup.cancelled():
            lookup.exception()  # retrieved: every sender that waited has had it already

    async def _pin(self, key: PinKey, old: _Pin | None) -> _Pin:
        _scheme, host, port = key
        literal = _ip_literal(host)
        addresses = [literal] if literal is not None else await self._lookup(host, port)
        reasons = {address: refusal(address, self._allowed) for address in addresses}
        allowed = [address for address, reason in reasons.items() if reason is None]
        if not allowed:
            self._pins.pop(key, None)
            raise RefusedAddress(f"refused to connect: {next(iter(reasons.values()))}")
        unreachable = self._unreachable.pop(key, None)
        if unreachable in allowed and len(allowed) > 1:
            # It failed to connect: the others first (aiohttp tries each address in turn).
            allowed.remove(unreachable)
            allowed.append(unreachable)
        if old is not None and old.address in allowed and old.address != unreachable:
            # Still an answer, still allowed: keep the client and its keep-alive connections
            # (round-robin DNS reorders its answers on every lookup).
            address, client = old.address, old.client
        else:
            address = allowed[0]
            client = self._build(None if literal is not None else (host, str(address), port))
        now = time.monotonic()
        pin = _Pin(client, address, now + self._ttl)
        self._drop_idle(now)
        self._pins[key] = pin
        return pin

    def _build(self, pinned: tuple[str, str, int] | None) -> Client:
        builder = (
            ClientBuilder()
            .follow_redirects(False)
            .no_proxy()  # and none from the environment
            .http1_only()
            # Header names as the signing code writes them (lower case), not title-cased: what
            # the aiohttp transport sends, and what receivers reading a plain dict expect.
            .http1_lower_case_headers()
            .user_agent(USER_AGENT)
            .referer(False)
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
            .default_cookie_store(False)
            .max_connections(self._max_in_flight)
            .pool_max_idle_per_host(self._max_in_flight)
            # aiohttp's keep-alive (15 s): reqwest's default, 90 s, outlasts what many servers
            # keep, and a request sent as the server closes an idle connection fails.
            .pool_idle_timeout(_KEEP_ALIVE)
        )
        if pinned is not None:
            builder = builder.resolve(*pinned)
        return builder.build()

    def _drop_idle(self, now: float) -> None:
        """Forget pins unused for IDLE_PIN: dropping a client closes its pool once the requests
        still holding it finish, so no request is cut off."""
        idle = max(IDLE_PIN, 5 * self._ttl)
        stale = [key for key, pin in self._pins.items() if pin.expires + idle < now]
        for key in stale:
            del self._pins[key]

    async def close(self) -> None:
        for lookup in list(self._lookups.values()):
            lookup.cancel()
        pins, self._pins = list(self._pins.values()), {}
        for client in {id(pin.client): pin.client for pin in pins}.values():
            await client.close()


def _ip_literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


async def _lookup(host: str, port: int) -> list[Address]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    addresses: list[Address] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        # A scope id ("fe80::1%eth0") is kept apart from the address by ipaddress.
        address = ipaddress.ip_address(str(sockaddr[0]))
        if address not in addresses:
            addresses.append(address)
    return addresses


class ReqwestTransport:
    """Signed webhooks over pyreqwest, in each endpoint's signature scheme."""

    def __init__(
        self,
        clients: PinnedClients,
        *,
        timeout: float,
        response_body_limit: int,
        max_timeout: float | None = None,
    ) -> None:
        """As :class:`pgcourier.delivery.WebhookTransport`: ``timeout`` applies to endpoints
        without their own; ``max_timeout`` caps theirs."""
        self._clients = clients
        self._timeout = timeout
        self._default_limit = timedelta(seconds=timeout)
        self._max_timeout = max_timeout
        self._body_limit = response_body_limit

    async def send(self, job: Job) -> AttemptResult:
        body = job.body()
        headers = request_headers(job, body)
        seconds = timeout_for(job, self._timeout, self._max_timeout)
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        # As in delivery.py, all that follows the request line is the receiver's and may be
        # hostile: text from it goes through storable_text, and hyper bounds the head.
        try:
            client = self._clients.ready(job.url)
            if client is None:
                # The lookup counts against the request's timeout, as aiohttp's does.
                async with asyncio.timeout(seconds):
                    client = await self._clients.client_for(job.url)
                remaining = max(seconds - (time.perf_counter() - t0), 0.001)
                limit = timedelta(seconds=remaining)
            elif seconds == self._timeout:
                limit = self._default_limit
            else:
                limit = timedelta(seconds=seconds)
            request = (
                client.post(job.url)
                .headers(headers)
                .body_bytes(body)
                .timeout(limit)
                # Nothing of the body read before the head is handed over: by default pyreqwest
                # reads up to 64 KiB of it first, and a body that then breaks or stalls would
                # lose the status, which decides the outcome (see response_text).
                .streamed_read_buffer_limit(0)
                .build_streamed()
            )
            async with request as response:
                raw, problem = await _read_at_most(response.body_reader, self._body_limit)
                try:
                    retry_after = response.get_header("retry-after")
                except ValueError:  # not visible ASCII: no delay anyone could read from it
                    retry_after = None
                return AttemptResult(
                    started_at=started_at,
                    duration=time.perf_counter() - t0,
                    status=response.status,
                    response_body=response_text(raw, problem, self._body_limit),
                    retry_after=retry_after,
                )
        except TimeoutError:  # reqwest's RequestTimeoutError is one too
            error = f"timeout after {seconds:g}s"
        except RefusedAddress as exc:
            error = str(exc)
        except PyreqwestError as exc:
            error = _describe(exc)
            if _CONNECTING in _causes(exc):
                self._clients.connect_failed(job.url)
        except (OSError, ValueError) as exc:  # an unresolvable name, a malformed URL or header
            error = f"{type(exc).__name__}: {exc}"
        return AttemptResult(
            started_at=started_at,
            duration=time.perf_counter() - t0,
            error=storable_text(error, ERROR_LIMIT, one_line=True),
        )


def _causes(exc: PyreqwestError) -> list[str]:
    causes = exc.details.get("causes") if isinstance(exc, RequestError) else None
    return [cause["message"] for cause in causes or ()]


def _deepest_cause(exc: PyreqwestError) -> str | None:
    """What reqwest names as the root of ``exc`` (the causes above it repeat the URL and
    hyper's internal stage names)."""
    causes = _causes(exc)
    return causes[-1] if causes else None


def _describe(exc: PyreqwestError) -> str:
    """One readable line for a reqwest error: its kind and its deepest cause."""
    deepest = _deepest_cause(exc)
    if deepest == _HYPER_CLOSED_EARLY:
        return CLOSED_EARLY
    if isinstance(exc, DecodeError):  # the response head did not parse, or was too large
        return f"invalid HTTP response: {deepest or exc.message}"
    return f"{exc.message}: {deepest}" if deepest else exc.message


async def _read_at_most(reader: ResponseBodyReader, limit: int) -> tuple[bytes, str | None]:
    """The body, or its first ``limit`` bytes (the connection is then dropped, not reused), and
    what went wrong reading it, if anything. Read until the limit or the end, so that a body
    cut short by a closed connection is noticed (hyper checks Content-Length)."""
    data = bytearray()
    try:
        while len(data) < limit:
            # Chunk by chunk as hyper hands them over (each bounded by its read buffer): read(n)
            # waits to fill n bytes and drops what it gathered when the body then breaks.
            chunk = await reader.read_chunk()
            if chunk is None:
                break
            data += memoryview(chunk)[: limit - len(data)]
    except RequestTimeoutError:
        return bytes(data), BODY_TIMED_OUT
    except PyreqwestError as exc:  # e.g. the connection closed before Content-Length bytes came
        return bytes(data), _deepest_cause(exc) or exc.message
    return bytes(data), None
