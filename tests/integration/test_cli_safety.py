"""The pgcourier command with hostile input around it: secrets kept off the command line
(issue 15.13) and receivers' text that must not drive the operator's terminal (issue 15.9)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from pgcourier import ops
from tests.integration.helpers import add_endpoint, wait_until
from tests.integration.test_cli import cli_env

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
SLACK_TOKEN = "xoxb-1111-2222-from-a-file"


async def run(
    *args: str, dsn: str, stdin: bytes | None = None, text: bool = False
) -> tuple[int, str, str]:
    """The command as a user runs it, with ``stdin`` piped in."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgcourier",
        *(() if text else ("--json",)),
        *args,
        env=cli_env(dsn),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _stored(conn: asyncpg.Connection, column: str) -> list[Any]:
    rows = await conn.fetch(f"SELECT {column} FROM courier.endpoints ORDER BY created_at")
    return [r[0] for r in rows]


# -- secrets from a file or stdin ---------------------------------------------------------------


async def test_endpoint_add_reads_the_secret_from_a_file(
    dsn: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")  # as `echo` writes it: the newline is not the secret's
    code, out, err = await run(
        "endpoint", "add", "--url", "https://example.com/h", "--event", "*",
        "--secret-file", str(path), dsn=dsn,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["secret"] == SECRET
    assert await _stored(conn, "secret") == [SECRET]


async def test_rotate_secret_reads_stdin(dsn: str, conn: asyncpg.Connection) -> None:
    endpoint = await add_endpoint(conn, "https://example.com/h")
    code, out, err = await run(
        "endpoint", "rotate-secret", str(endpoint["id"]), "--secret-file", "-",
        dsn=dsn, stdin=OTHER_SECRET.encode() + b"\r\n",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["secret"] == OTHER_SECRET
    assert await _stored(conn, "secret") == [OTHER_SECRET]


async def test_slack_tokens_from_a_file_and_stdin(
    dsn: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = tmp_path / "token"
    path.write_text(SLACK_TOKEN + "\n")
    code, out, err = await run(
        "endpoint", "add", "--slack-channel", "#ops", "--event", "*",
        "--slack-token-file", str(path), dsn=dsn,
    )  # fmt: skip
    assert code == 0, err
    assert SLACK_TOKEN not in out  # never printed
    assert await _stored(conn, "slack_token") == [SLACK_TOKEN]
    endpoint_id = json.loads(out)["id"]
    code, _, err = await run(
        "endpoint", "update", endpoint_id, "--slack-token-file", "-",
        dsn=dsn, stdin=b"xoxb-3333-4444-from-stdin\n",
    )  # fmt: skip
    assert code == 0, err
    assert await _stored(conn, "slack_token") == ["xoxb-3333-4444-from-stdin"]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--secret-file", "{missing}"], None, "--secret-file: cannot read"),
        (["--secret-file", "{empty}"], None, "is empty"),
        (["--secret-file", "-"], b"\n", "is empty"),
        (["--secret-file", "{dir}"], None, "--secret-file: cannot read"),
        (["--secret-file", "{binary}"], None, "is not UTF-8 text"),
        (["--secret", SECRET, "--secret-file", "{empty}"], None, "not allowed with"),
        (
            ["--slack-channel", "#x", "--secret-file", "-", "--slack-token-file", "-"],
            b"x",
            "only one option can read stdin",
        ),
    ],
)
async def test_unusable_secret_files_are_one_line_and_change_nothing(
    dsn: str,
    conn: asyncpg.Connection,
    tmp_path: Path,
    args: list[str],
    stdin: bytes | None,
    message: str,
) -> None:
    (tmp_path / "empty").write_text("")
    (tmp_path / "binary").write_bytes(b"whsec_\xff\xfe")
    paths = {
        "missing": str(tmp_path / "nope"),
        "empty": str(tmp_path / "empty"),
        "dir": str(tmp_path),
        "binary": str(tmp_path / "binary"),
    }
    filled = [a.format(**paths) for a in args]
    code, out, err = await run(
        "endpoint", "add", "--url", "https://example.com/h", "--event", "*", *filled,
        dsn=dsn, stdin=stdin,
    )  # fmt: skip
    assert code != 0
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pgcourier")
    assert "error:" in lines[0]
    assert message in lines[0]
    assert await _stored(conn, "id") == []


async def test_a_bad_secret_from_a_file_is_still_validated(
    dsn: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n\n")  # only one newline is stripped
    code, _, err = await run(
        "endpoint", "add", "--url", "https://example.com/h", "--event", "*",
        "--secret-file", str(path), dsn=dsn,
    )  # fmt: skip
    assert code != 0
    assert len(err.strip().splitlines()) == 1
    assert await _stored(conn, "id") == []


# -- receivers' text in the output --------------------------------------------------------------

HOSTILE = "\x1b[2J\x1b]0;pwned\x07 \u009b31m red\r\nfake line \u202egnp.exe"


@pytest.fixture
async def hostile_receiver(aiohttp_server: Any) -> str:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=500, text=HOSTILE)

    app = web.Application()
    app.router.add_post("/h", answer)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}/h"


def _no_controls(out: str) -> None:
    for char in ("\x1b", "\x07", "\u009b", "\r", "\u202e"):
        assert char not in out, repr(char)


async def test_text_output_escapes_control_characters_from_receivers(
    dsn: str, conn: asyncpg.Connection, relay: Any, hostile_receiver: str
) -> None:
    await add_endpoint(conn, hostile_receiver)
    event_id = str(await ops.enqueue(conn, "order.paid", {"n": 1}))
    async with relay(retry_schedule=""):
        await wait_until(lambda: conn.fetchval("SELECT count(*) FROM courier.dead_letters"))
    [dead] = (await ops.list_dead(conn, ops.DeadFilter()))["data"]
    for args in (
        ("events", "attempts", event_id),
        ("events", "show", event_id),
        ("dlq", "show", str(dead["id"])),
        ("dlq", "list"),
    ):
        code, out, err = await run(*args, dsn=dsn, text=True)
        assert code == 0, err
        _no_controls(out)
    code, out, _ = await run("events", "attempts", event_id, dsn=dsn, text=True)
    assert "\\x1b[2J\\x1b]0;pwned\\x07 \\x9b31m red\\x0d" in out  # cut to the column width
    # JSON output escapes them too, and gives the exact text back.
    code, out, _ = await run("events", "attempts", event_id, dsn=dsn)
    _no_controls(out)
    [attempt] = json.loads(out)["data"]
    assert attempt["response_body"] == HOSTILE
