"""The admin server's defences (issue 15): the token rule, cross-site requests and DNS rebinding
against a token-less server, JSON-only bodies, hostile headers and bodies, and errors that keep
the database's address to the log."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import structlog

from pgcourier.admin import create_app
from pgcourier.admin.api import ROUTES
from pgcourier.admin.context import AdminContext
from pgcourier.metrics import Metrics
from tests.integration.helpers import AUTH, TOKEN
from tests.integration.test_cli import cli_env

ENDPOINT = {"url": "https://example.com/hook", "event_types": ["*"]}
JSON = {"Content-Type": "application/json"}
# Every route that reads a body, with a path that reaches its handler.
ZERO = "00000000-0000-0000-0000-000000000000"
BODY_ROUTES = [
    (r.method, r.path.replace("{id}", ZERO).replace("{name}", "order.paid"))
    for r in ROUTES
    if r.body is not None
]


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def open_api(aiohttp_client: Any, pool: asyncpg.Pool) -> Any:
    """The admin app as it runs by default: no token, loopback only."""
    return await aiohttp_client(create_app(AdminContext(pool, Metrics())))


async def _endpoints(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM courier.endpoints"))


async def _error(response: Any, status: int, field: str | None) -> dict[str, Any]:
    assert response.status == status, await response.text()
    error: dict[str, Any] = (await response.json())["error"]
    assert set(error) == {"code", "message", "field"}
    assert error["field"] == field
    return error


# --- finding 2: one rule for "a token is set" -------------------------------------------------


@pytest.mark.parametrize("token", ["", "   ", "short"])
async def test_the_app_refuses_a_token_that_guards_nothing(pool: asyncpg.Pool, token: str) -> None:
    # The settings refuse these at start; the app refuses them too, so that no other way of
    # building it can turn an empty token into "no authentication".
    with pytest.raises(ValueError, match="PGCOURIER_ADMIN_TOKEN"):
        AdminContext(pool, Metrics(), None, token)


@pytest.mark.parametrize("token", ["", "t0o-short"])
async def test_the_cli_refuses_an_empty_or_short_token_in_one_line(dsn: str, token: str) -> None:
    env = cli_env(dsn, PGCOURIER_ADMIN_TOKEN=token, PGCOURIER_ADMIN_HOST="0.0.0.0")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgcourier",
        "admin",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    [line] = err.decode().splitlines()
    assert line.startswith("pgcourier: invalid setting PGCOURIER_ADMIN_TOKEN: ")
    assert out == b""


# --- finding 3: bodies are JSON, said so by their content type --------------------------------


@pytest.mark.parametrize("guarded", [False, True])
@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
    ],
)
async def test_a_body_that_is_not_declared_json_is_refused(
    aiohttp_client: Any,
    pool: asyncpg.Pool,
    conn: asyncpg.Connection,
    guarded: bool,
    content_type: str | None,
) -> None:
    # text/plain and forms are what a cross-site page can POST without a preflight.
    client = await aiohttp_client(
        create_app(AdminContext(pool, Metrics(), None, TOKEN if guarded else None))
    )
    headers = {
        **(AUTH if guarded else {}),
        **({"Content-Type": content_type} if content_type else {}),
    }
    for method, path in BODY_ROUTES:
        response = await client.request(
            method,
            path,
            data=json.dumps(ENDPOINT).encode(),
            headers=headers,
            skip_auto_headers=() if content_type else ("Content-Type",),
        )
        error = await _error(response, 415, "content-type")
        assert "application/json" in error["message"]
    assert await _endpoints(conn) == 0


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
async def test_json_bodies_are_accepted(open_api: Any, content_type: str) -> None:
    response = await open_api.post(
        "/api/v1/endpoints", data=json.dumps(ENDPOINT), headers={"Content-Type": content_type}
    )
    assert response.status == 201, await response.text()


async def test_routes_that_need_no_body_take_none_when_declared_json(open_api: Any) -> None:
    created = await (await open_api.post("/api/v1/endpoints", json=ENDPOINT)).json()
    # No body at all: the defaults apply.
    rotate = f"/api/v1/endpoints/{created['id']}/rotate-secret"
    response = await open_api.post(rotate, headers=JSON)
    assert response.status == 200, await response.text()
    response = await open_api.post("/api/v1/dead-letters/replay", headers=JSON)
    assert (response.status, (await response.json())["count"]) == (200, 0)
    assert (await open_api.post("/api/v1/dead-letters/1/replay", headers=JSON)).status == 404


@pytest.mark.parametrize(
    "path", ["/api/v1/dead-letters/replay", "/api/v1/endpoints/{id}/rotate-secret"]
)
async def test_without_a_token_a_bodiless_write_must_declare_json_too(
    open_api: Any, conn: asyncpg.Connection, path: str
) -> None:
    """A cross-site fetch() POST with no body needs no preflight: "replay everything" and
    "rotate this secret" must not be reachable that way, whatever the browser sends as Origin."""
    created = await (await open_api.post("/api/v1/endpoints", json=ENDPOINT)).json()
    before = await conn.fetchval("SELECT secret FROM courier.endpoints")
    response = await open_api.post(path.replace("{id}", created["id"]))
    await _error(response, 415, "content-type")
    assert await conn.fetchval("SELECT secret FROM courier.endpoints") == before


async def test_with_a_token_a_bodiless_write_needs_no_content_type(
    aiohttp_client: Any, pool: asyncpg.Pool
) -> None:
    api = await aiohttp_client(create_app(AdminContext(pool, Metrics(), token=TOKEN)))
    response = await api.post("/api/v1/dead-letters/replay", headers=AUTH)
    assert (response.status, (await response.json())["count"]) == (200, 0)


async def test_an_oversized_json_body_still_gets_a_json_413(open_api: Any) -> None:
    body = io.BytesIO(b"{" + b" " * (2 * 1024 * 1024) + b"}")
    response = await open_api.post("/api/v1/events", data=body, headers=JSON)
    assert (await _error(response, 413, None))["code"] == "request_entity_too_large"


# --- finding 3: without a token, only this machine's own pages and tools ----------------------


FOREIGN_HOSTS = [
    "evil.example",
    "evil.example:8787",
    "127.0.0.1.evil.example",
    "10.0.0.1:8787",
    "[::2]:8787",
    "localhost.evil.example",
    "0.0.0.0:8787",
    "[::1",
]
LOOPBACK_HOSTS = ["localhost", "LOCALHOST:8787", "127.0.0.1", "127.1.2.3:80", "[::1]", "[::1]:8787"]


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
async def test_without_a_token_a_foreign_host_is_refused_everywhere(
    open_api: Any, conn: asyncpg.Connection, host: str
) -> None:
    # A DNS-rebinding page reaches 127.0.0.1 under its own name: the Host header gives it away.
    headers = {"Host": host}
    for path in ("/api/v1/endpoints", "/metrics", "/ready", "/openapi.json"):
        await _error(await open_api.get(path, headers=headers), 403, "host")
    response = await open_api.post("/api/v1/endpoints", json=ENDPOINT, headers=headers)
    await _error(response, 403, "host")
    assert await _endpoints(conn) == 0
    # /health says only "ok" and changes nothing: probes keep it whatever name they use.
    assert (await open_api.get("/health", headers=headers)).status == 200


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
async def test_without_a_token_loopback_names_are_served(open_api: Any, host: str) -> None:
    response = await open_api.get("/api/v1/endpoints", headers={"Host": host})
    assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://evil.example:8787",
        "null",
        "http://127.0.0.1.evil.example",
        "http://user@127.0.0.1",
        "file://",
    ],
)
async def test_without_a_token_a_foreign_origin_is_refused(
    open_api: Any, conn: asyncpg.Connection, origin: str
) -> None:
    response = await open_api.post("/api/v1/endpoints", json=ENDPOINT, headers={"Origin": origin})
    await _error(response, 403, "origin")
    response = await open_api.post(
        "/api/v1/events", json={"event_type": "a.b", "payload": {}}, headers={"Origin": origin}
    )
    await _error(response, 403, "origin")
    assert await conn.fetchval("SELECT count(*) FROM courier.outbox") == 0
    assert await _endpoints(conn) == 0


@pytest.mark.parametrize(
    "origin", ["http://localhost:3000", "http://127.0.0.1:8787", "https://[::1]"]
)
async def test_without_a_token_a_loopback_origin_is_served(open_api: Any, origin: str) -> None:
    response = await open_api.post("/api/v1/endpoints", json=ENDPOINT, headers={"Origin": origin})
    assert response.status == 201, await response.text()


async def test_with_a_token_host_and_origin_are_the_proxys_business(
    aiohttp_client: Any, pool: asyncpg.Pool
) -> None:
    # Behind a reverse proxy the Host is the public name; a browser cannot add the bearer header
    # to a cross-site request without a CORS preflight, which this server never grants.
    client = await aiohttp_client(create_app(AdminContext(pool, Metrics(), None, TOKEN)))
    headers = {**AUTH, "Host": "admin.example.com", "Origin": "https://console.example.com"}
    assert (await client.get("/api/v1/endpoints", headers=headers)).status == 200
    response = await client.post("/api/v1/endpoints", json=ENDPOINT, headers=headers)
    assert response.status == 201, await response.text()
    assert (await client.get("/api/v1/endpoints", headers={"Host": "evil.example"})).status == 401


# --- finding 7: a hostile Authorization header is a 401, not a crash --------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer \xff\xfe",
        b"Bearer t0ken-\xc3\xa9",
        b"\xff",
        b"Bearer " + TOKEN.encode() + b"\x80",
    ],
)
async def test_a_non_ascii_authorization_header_is_a_401(
    aiohttp_server: Any, pool: asyncpg.Pool, value: bytes
) -> None:
    server = await aiohttp_server(create_app(AdminContext(pool, Metrics(), None, TOKEN)))
    with structlog.testing.capture_logs() as logs:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"GET /api/v1/endpoints HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
            + value
            + b"\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 "), raw
    assert json.loads(body)["error"]["code"] == "unauthorized"
    assert logs == []  # nothing crashed, so nothing to log


# --- finding 10: the OpenAPI document and database errors -------------------------------------


@pytest.mark.parametrize("open_operations", [True, False])
async def test_the_openapi_document_follows_the_operations_setting(
    aiohttp_client: Any, pool: asyncpg.Pool, open_operations: bool
) -> None:
    context = AdminContext(pool, Metrics(), None, TOKEN, open_operations=open_operations)
    client = await aiohttp_client(create_app(context))
    assert (await client.get("/openapi.json")).status == (200 if open_operations else 401)
    response = await client.get("/openapi.json", headers=AUTH)
    assert (await response.json())["openapi"] == "3.1.0"


@pytest.fixture
async def unreachable_pool() -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    """A pool whose server refuses connections (a port nobody listens on)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    p = await asyncpg.create_pool(
        f"postgresql://courier_user@127.0.0.1:{port}/courier_db", min_size=0, max_size=1
    )
    try:
        yield p, port
    finally:
        await p.close()


async def test_ready_names_the_problem_not_the_database_address(
    aiohttp_client: Any, unreachable_pool: tuple[asyncpg.Pool, str]
) -> None:
    pool, port = unreachable_pool
    client = await aiohttp_client(create_app(AdminContext(pool, Metrics())))
    with structlog.testing.capture_logs() as logs:
        response = await client.get("/ready")
    assert response.status == 503
    text = await response.text()
    assert json.loads(text) == {"status": "unavailable", "reasons": ["database unreachable"]}
    assert port not in text
    assert "127.0.0.1" not in text
    # The operator still gets the detail, in the log.
    assert any(port in str(entry.get("error")) for entry in logs), logs
    assert all(entry["log_level"] == "warning" for entry in logs), logs


async def test_a_503_keeps_the_database_address_to_the_log(
    aiohttp_client: Any, unreachable_pool: tuple[asyncpg.Pool, str]
) -> None:
    pool, port = unreachable_pool
    client = await aiohttp_client(create_app(AdminContext(pool, Metrics())))
    with structlog.testing.capture_logs() as logs:
        response = await client.get("/api/v1/endpoints")
        text = await response.text()
    error = await _error(response, 503, None)
    assert error == {"code": "unavailable", "message": "database unavailable", "field": None}
    assert port not in text
    assert "127.0.0.1" not in text
    assert any(port in str(entry.get("error")) for entry in logs), logs
    assert all(entry["log_level"] == "warning" for entry in logs), logs  # no traceback


# --- finding 4 (API side): bodies nested thousands of levels deep -----------------------------


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
async def test_a_deeply_nested_body_is_a_400_on_every_body_route(
    open_api: Any, method: str, path: str
) -> None:
    for body in (_nested(100_000), '{"payload": {"x": ' + _nested(5000) + "}}"):
        response = await open_api.request(method, path, data=body, headers=JSON)
        error = await _error(response, 400, "body")
        assert "recursion limit" in error["message"]


async def test_an_event_nested_as_deep_as_the_parser_allows_never_500s(open_api: Any) -> None:
    # Just under the parser's limit the payload reaches the database, which may refuse it (a
    # 4xx naming the field) or keep it; either way it must read back without a 500.
    for depth in (100, 197):
        body = '{"event_type": "a.b", "payload": {"x": ' + _nested(depth) + "}}"
        response = await open_api.post("/api/v1/events", data=body, headers=JSON)
        if response.status == 201:
            event = await open_api.get(f"/api/v1/events/{(await response.json())['id']}")
            assert event.status == 200, await event.text()
            assert (await open_api.get("/api/v1/events")).status == 200
        else:
            await _error(response, 422, "payload")
