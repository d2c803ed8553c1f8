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


async def _relay_backends(conn: asyncpg.Connection, database: str) -> list[int]:
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )
    return [row["pid"] for row in rows]


@pytest.mark.slow
async def test_asyncpg_reconnect_failures_are_json(dsn: str, server_dsn: str) -> None:
    """The issue's case: a server that drops the relay's connections and refuses new ones.

    asyncpg then logs "Failed to restore the pool connection floor; retrying" with a traceback
    from its pool's maintenance task. Whatever else the relay does meanwhile, every line it
    writes must be JSON.
    """
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
    admin = await asyncpg.connect(server_dsn)
    try:

        async def relay_connected() -> bool:
            return len(await _relay_backends(admin, database)) >= 2  # pool floor + LISTEN

        await wait_until(relay_connected, timeout=20)
        # Refuse new connections to this database (superusers too), then cut the relay's.
        await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
        # asyncpg retries after 1 s, then 2 s: give it time for a few lines.
        await asyncio.sleep(4)
        await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
    finally:
        await admin.close()
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = json_lines(err.decode())
    floor = [line for line in lines if line.get("logger") == "asyncpg.pool"]
    assert floor, f"asyncpg logged nothing; stderr:\n{err.decode()}"
    assert floor[0]["event"] == "Failed to restore the pool connection floor; retrying"
    assert floor[0]["level"] == "warning"
    assert "Traceback" in floor[0]["exception"]
