"""``pgcourier run --processes N``: N relay processes on one database, under one parent.

One relay is one Python process, and under a drain its own CPU per delivery is what limits it
(issue 11). Relays already share a database safely (claims skip locked rows; leases, endpoint
limits and rate limits live in the database), so using more cores is running more relays. The
parent only supervises: it starts N ``pgcourier run`` children, forwards SIGTERM and SIGINT to
them, restarts one that dies on its own (with a backoff, so a crash loop does not spin), and
exits 0 once every child has drained and exited 0 after a signal.

Children run in their own session: a Ctrl-C on the terminal reaches the parent alone, which
forwards it once. (A second signal to a draining relay ends it at once, as it does for a single
``pgcourier run``; the terminal's copy plus the parent's would make every Ctrl-C a second one.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

import structlog

log = structlog.get_logger("pgcourier.processes")

MAX_PROCESSES = 64
RESTART_DELAY = 1.0  # doubled after each quick failure, up to RESTART_DELAY_MAX
RESTART_DELAY_MAX = 30.0
STABLE_AFTER = 60.0  # a child that ran this long before dying restarts at RESTART_DELAY again
# Beyond the relays' own shutdown timeout (their drain), before a child that has not exited is
# killed: releasing leases, closing pools and the admin server take a moment too.
EXIT_GRACE = 30.0


def child_environment(index: int, dsn: str) -> dict[str, str]:
    """The environment of child ``index``: the parent's, on the parent's database (which it has
    migrated already), the admin server on child 0 only (one port, one /metrics)."""
    env = dict(os.environ)
    env["PGCOURIER_DATABASE_URL"] = dsn
    env["PGCOURIER_AUTO_MIGRATE"] = "false"
    if index > 0:
        env["PGCOURIER_ADMIN_ENABLED"] = "false"
    return env


class Supervisor:
    """Keeps ``processes`` relay children running until a signal, then waits for them."""

    def __init__(self, dsn: str, processes: int, *, shutdown_timeout: float) -> None:
        self._dsn = dsn
        self._processes = processes
        self._exit_deadline = shutdown_timeout + EXIT_GRACE
        self._stopping = asyncio.Event()
        self._children: dict[int, asyncio.subprocess.Process] = {}

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Forward ``sig`` to every running child; no child is restarted from now on."""
        if not self._stopping.is_set():
            log.info("stopping: signalling the relay processes", signal=sig.name)
        self._stopping.set()
        for proc in self._children.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def run(self) -> int:
        """Supervise until every child has stopped after a signal; 0 when all exited 0."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, sig)
        try:
            codes = await asyncio.gather(*(self._keep(i) for i in range(self._processes)))
        except BaseException:
            # A bug here must not leave relays running without their parent.
            for proc in self._children.values():
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            raise
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        log.info("relay processes stopped", exit_codes=codes)
        return 0 if all(code == 0 for code in codes) else 1

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pgcourier",
            "run",
            "--process-index",
            str(index),
            env=child_environment(index, self._dsn),
            start_new_session=True,
        )
        log.info("relay process started", process=index, pid=proc.pid)
        return proc

    async def _keep(self, index: int) -> int:
        """Run child ``index``, restarting it while no signal came; its exit code after one."""
        loop = asyncio.get_running_loop()
        delay = RESTART_DELAY
        while not self._stopping.is_set():
            started = loop.time()
            try:
                proc = await self._spawn(index)
            except OSError as exc:
                code: int | None = None
                log.error("could not start a relay process", process=index, error=str(exc))
            else:
                self._children[index] = proc
                if self._stopping.is_set():  # a signal came while it was starting
                    proc.send_signal(signal.SIGTERM)
                exited = asyncio.ensure_future(proc.wait())
                stopping = asyncio.ensure_future(self._stopping.wait())
                await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if self._stopping.is_set():
                    return await self._reap(index, proc, exited)
                code = exited.result()
            if loop.time() - started >= STABLE_AFTER:
                delay = RESTART_DELAY
            log.warning(
                "relay process exited unexpectedly; restarting it",
                process=index,
                exit_code=code,
                restart_in=delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, RESTART_DELAY_MAX)
        # Stopped while waiting to restart: there was nothing running to stop.
        return 0

    async def _reap(
        self, index: int, proc: asyncio.subprocess.Process, exited: asyncio.Future[int]
    ) -> int:
        """Child ``index``'s exit code after a signal; killed if it outlives its drain."""
        try:
            return await asyncio.wait_for(exited, self._exit_deadline)
        except TimeoutError:
            log.error("relay process did not stop in time; killing it", process=index)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return 1
