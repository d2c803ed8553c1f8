"""What a user's log shipper sees from the real ``pgcourier`` process: JSON lines and nothing else.

stderr is a pipe here, as under systemd, Docker or Kubernetes, so the default format is JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.integration.helpers import wait_until


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user who set nothing: no PGCOURIER_*, no XDG_RUNTIME_DIR.

    XDG_RUNTIME_DIR is unset in most containers and ``sudo`` shells; platformdirs warns then.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PGCOURIER_") and k != "XDG_RUNTIME_DIR"
    }
    env.update(extra)
    return env


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of ``stderr`` parsed as a JSON object; the test fails on the first that is not."""
    parsed = []
    for line in stderr.splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"a stderr line is not JSON: {line!r}\nwhole stderr:\n{stderr}")
        assert isinstance(value, dict), line
        parsed.append(value)
    return parsed


async def test_demo_prints_only_pgcourier_output(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgcourier",
        "demo",
        cwd=tmp_path,
        env=user_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    assert out.decode().startswith("endpoint "), out.decode()
    assert "Warning" not in err.decode()
    lines = json_lines(err.decode())
    assert any(line["event"] == "relay started" for line in lines)


async def _backends(conn: asyncpg.Connection, database: str) -> list[int]:
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )
    return [row["pid"] for row in rows]


async def cut_off(server_dsn: str, database: str, *, backends: int, seconds: float) -> None:
    """Once ``backends`` sessions are on ``database``: end them and refuse new ones a while.

    ALLOW_CONNECTIONS false refuses superusers too, unlike a connection limit.
    """
    admin = await asyncpg.connect(server_dsn)
    try:

        async def connected() -> bool:
            return len(await _backends(admin, database)) >= backends

        await wait_until(connected, timeout=20)
        await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
            await asyncio.sleep(seconds)
        finally:
            await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
    finally:
        await admin.close()


# A process logging as the CLI configures it, holding an asyncpg pool of two while it runs.
POOL_HOLDER = """
import asyncio, sys
import asyncpg
from pgcourier.logs import configure_logging

async def main() -> None:
    pool = await asyncpg.create_pool(sys.argv[1], min_size=2, max_size=2)
    await asyncio.sleep(float(sys.argv[2]))
    await pool.close()

configure_logging("info", "auto")
asyncio.run(main())
"""


async def test_asyncpg_pool_floor_retries_are_json(dsn: str, server_dsn: str) -> None:
    """The issue's case: asyncpg's own "Failed to restore the pool connection floor; retrying",
    logged with a traceback from its pool's maintenance task when the server refuses it."""
    database = urlsplit(dsn).path.lstrip("/")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        POOL_HOLDER,
        dsn,
        "6",
        env=user_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # asyncpg retries after 1 s, then 2 s: 3.5 s gives two failures.
    await cut_off(server_dsn, database, backends=2, seconds=3.5)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    floor = [line for line in json_lines(err.decode()) if line.get("logger") == "asyncpg.pool"]
    assert floor, f"asyncpg logged nothing; stderr:\n{err.decode()}"
    assert floor[0]["event"] == "Failed to restore the pool connection floor; retrying"
    assert floor[0]["level"] == "warning"
    assert "Traceback" in floor[0]["exception"]
    assert "is not currently accepting connections" in floor[0]["exception"]


@pytest.mark.slow
async def test_a_relay_cut_off_from_its_database_logs_only_json(dsn: str, server_dsn: str) -> None:
    """The real relay through the same outage: whatever it does (it retries, or until issue 10
    item 4 is done it may crash), every line it writes is JSON and tracebacks stay inside."""
    database = urlsplit(dsn).path.lstrip("/")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgcourier",
        "run",
        env=user_env(PGCOURIER_DATABASE_URL=dsn, PGCOURIER_ADMIN_PORT="0"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await cut_off(server_dsn, database, backends=2, seconds=3.5)  # pool floor + LISTEN
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = json_lines(err.decode())
    assert [line for line in lines if line["level"] in ("warning", "error", "critical")], (
        f"the outage left no trace in the logs:\n{err.decode()}"
    )
    assert not any("Traceback" in line["event"] for line in lines)
