"""The processes under measurement, and what they cost.

The relay runs as the real ``pgcourier run`` process; PgQueuer's consumer as its own process
(benchlib.pgq_consumer). Both are sampled for peak RSS. ``CpuMeter`` adds up the CPU seconds of
such a process and of the Postgres processes serving it over a measured window.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import psutil  # type: ignore[import-untyped]

from benchlib import child_env, python


@dataclass
class Watched:
    """A child process, its peak RSS sampled every 50 ms."""

    proc: subprocess.Popen[bytes]
    name: str
    peak_rss: int = 0
    _sampler: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        ps = psutil.Process(self.proc.pid)
        while True:
            with contextlib.suppress(psutil.Error):
                self.peak_rss = max(self.peak_rss, ps.memory_info().rss)
            await asyncio.sleep(0.05)

    def cpu_seconds(self) -> float:
        """user + system CPU of the process so far (the relay's own: py-spy's is not counted)."""
        ps = psutil.Process(self.proc.pid)
        with contextlib.suppress(psutil.Error):
            children = ps.children()
            if children and ps.name().startswith("py-spy"):
                ps = children[0]
        return process_cpu(ps.pid)

    def check_alive(self, what: str | None = None) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{what or self.name} exited with status {self.proc.returncode}")


def process_cpu(pid: int) -> float:
    """user + system CPU seconds of one process so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


# The processes running now. Every wait of the benchmark checks them (check_all), so that one
# dying makes the run fail at once instead of at the end of a long timeout.
RUNNING: list[Watched] = []


def check_all() -> None:
    for w in RUNNING:
        w.check_alive()


@contextlib.asynccontextmanager
async def watched(command: Sequence[str], env: dict[str, str], name: str) -> AsyncIterator[Watched]:
    # Its output goes to a file, not a pipe: a relay logging every attempt would fill a pipe
    # and stall. The file's tail is shown when the process died on its own.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(list(command), env=env, stdout=log, stderr=subprocess.STDOUT)
        w = Watched(proc, name)
        w._sampler = asyncio.create_task(w._sample())
        RUNNING.append(w)
        try:
            yield w
        finally:
            RUNNING.remove(w)
            w._sampler.cancel()
            target = proc
            if command[0] == "py-spy":  # stop the relay; py-spy writes its profile when it exits
                children = psutil.Process(proc.pid).children()
                target = children[0] if children else proc
            if proc.poll() is None:
                target.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.returncode not in (0, -signal.SIGTERM):
                log.seek(max(0, log.seek(0, 2) - 2000))
                print(f"{name} exited with {proc.returncode}; its last output:")
                print(log.read().decode(errors="replace"), flush=True)


RELAY_ENV: dict[str, str] = {}  # --relay-env, for every relay started


@contextlib.asynccontextmanager
async def relay_process(
    dsn: str,
    log_level: str,
    profile: str | None = None,
    env_extra: dict[str, str] | None = None,
) -> AsyncIterator[Watched]:
    env = child_env(
        PGCOURIER_DATABASE_URL=dsn,
        PGCOURIER_LOG_LEVEL=log_level,
        PGCOURIER_LOG_FORMAT="json",
        PGCOURIER_ADMIN_PORT="0",
        PGCOURIER_ALLOW_NETWORKS="127.0.0.0/8",  # the receiver listens on loopback
    )
    env.update(RELAY_ENV)
    env.update(env_extra or {})
    command = [python(), "-m", "pgcourier", "run"]
    if profile:  # py-spy samples the relay and writes collapsed stacks when it exits
        command = ["py-spy", "record", "--format", "raw", "--rate", "200", "-o", profile, "--"]
        command += [python(), "-m", "pgcourier", "run"]
    async with watched(command, env, "the relay") as relay:
        yield relay


@contextlib.asynccontextmanager
async def pgq_consumer_process(dsn: str, url: str, loop: str) -> AsyncIterator[Watched]:
    command = [python(), "-m", "benchlib.pgq_consumer", dsn, url, loop]
    async with watched(command, child_env(), "PgQueuer's consumer") as consumer:
        yield consumer


# -- CPU of the Postgres processes serving one database ----------------------------------------

PG_PROCESSES = """
SELECT pid, backend_type FROM pg_stat_activity
WHERE pid <> ALL($2::int[])
  AND (datname = $1 OR (backend_type <> 'client backend' AND datname IS NULL))
"""


@dataclass
class CpuMeter:
    """CPU seconds of Postgres over a window: the client backends of one database (the queue's
    own connections; the benchmark's are excluded by pid) and the server's background
    processes (WAL writer, checkpointer, I/O workers: work the commits cause). Backends are
    listed every 0.2 s so that one opened during the window is counted from its start.

    On a server shared with other work the background share includes theirs: run it quiet."""

    conn: asyncpg.Connection
    database: str
    exclude: list[int]
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)
    missing: bool = False
    _task: asyncio.Task[None] | None = None

    async def _sample(self, baseline: bool) -> None:
        rows = await self.conn.fetch(PG_PROCESSES, self.database, self.exclude)
        for row in rows:
            pid = row["pid"]
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                # Not a process of this machine (a remote --dsn), or gone already.
                self.missing = self.missing or not psutil.pid_exists(pid)
                continue
            used = float(times.user + times.system)
            if pid not in self.first:
                self.first[pid] = used if baseline else 0.0
            self.last[pid] = used
            self.kinds[pid] = row["backend_type"]

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            await self._sample(baseline=False)

    async def start(self) -> None:
        # The caller's list, extended in place: pids it adds during the window (producers'
        # backends) are left out too, at stop() if a sample caught them before.
        self.exclude.append(self.conn.get_server_pid())
        await self._sample(baseline=True)
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> dict[str, float]:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._sample(baseline=False)
        spent = {
            pid: self.last[pid] - self.first[pid] for pid in self.last if pid not in self.exclude
        }
        clients = sum(v for pid, v in spent.items() if self.kinds[pid] == "client backend")
        return {"backends": clients, "background": sum(spent.values()) - clients}


class MachineMeter:
    """CPU of the whole machine (every process; busy = not idle or waiting on I/O), from
    construction to stop()."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = psutil.cpu_times()
        self.busy = self.seconds = 0.0

    def stop(self) -> None:
        cpu = psutil.cpu_times()
        self.seconds = time.monotonic() - self._t0
        self.busy = _busy(cpu) - _busy(self._cpu0)


def _busy(t: Any) -> float:
    # Linux counts guest time inside user time already; steal is time this VM wanted and its
    # host gave to another: busy for the purpose of "is the machine saturated".
    busy = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(getattr(t, f, 0.0) for f in busy))
