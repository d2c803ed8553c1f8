"""pgcourier's own JSON lines leave a loop turn's worth at a time (issue 11), and nothing about
them changes for whoever reads them: every line whole, in order with the libraries' lines, no
write past PIPE_BUF (`run --processes N` share one pipe), none left behind at exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from pgcourier import logs
from pgcourier.logs import LineBatcher, configure_logging, flush_logs

from .test_logs import run_logging

PIPE_BUF = 4096  # what a write to a pipe may hold to reach it whole (Linux)


class Recorder:
    """A stream off a terminal whose every write() is kept, text and bytes alike (its
    ``buffer`` is itself, as stderr's binary layer writes to the same file)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.buffer = self

    def isatty(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        self.writes.append(data.encode() if isinstance(data, str) else bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in b"".join(self.writes).splitlines()]


@contextlib.contextmanager
def configured(stream: Recorder) -> Iterator[Recorder]:
    """configure_logging onto ``stream``, everything it sets put back afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    hooks = sys.excepthook, threading.excepthook, sys.unraisablehook
    configure_logging("info", "json", stream=stream)  # type: ignore[arg-type]
    try:
        yield stream
    finally:
        structlog.reset_defaults()
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        sys.excepthook, threading.excepthook, sys.unraisablehook = hooks
        logging.captureWarnings(False)
        logs._batcher = None
        logs._handler = None


@pytest.fixture
def out() -> Iterator[Recorder]:
    with configured(Recorder()) as recorder:
        yield recorder


def test_one_turns_lines_leave_in_few_whole_writes_under_pipe_buf(out: Recorder) -> None:
    log = structlog.get_logger("pgcourier.relay")

    async def main() -> int:
        for n in range(200):
            log.info("delivery attempt", delivery_id=n, status=200, outcome="delivered")
        during = len(out.writes)
        await asyncio.sleep(0)
        return during

    written_during_the_turn = asyncio.run(main())
    total = sum(len(w) for w in out.writes)
    assert [line["delivery_id"] for line in out.lines()] == list(range(200))
    assert all(w.endswith(b"\n") and len(w) <= PIPE_BUF for w in out.writes)
    # One write per line before: 200. Cut at line boundaries under 4 KiB: a handful, each
    # nearly full.
    assert len(out.writes) <= total // (PIPE_BUF - 200) + 1, [len(w) for w in out.writes]
    # Nothing needs a write of its own inside the turn but the full chunks.
    assert written_during_the_turn == len(out.writes) - 1


def test_a_line_waits_one_loop_turn_at_most(out: Recorder) -> None:
    async def main() -> list[str]:
        structlog.get_logger("pgcourier.relay").info("relay started")
        await asyncio.sleep(0)
        return [line["event"] for line in out.lines()]

    assert asyncio.run(main()) == ["relay started"]


def test_lines_keep_their_order_with_the_libraries_lines(out: Recorder) -> None:
    own = structlog.get_logger("pgcourier.relay")

    async def main() -> None:
        own.info("first, ours")
        logging.getLogger("asyncpg.pool").warning("second, a library's")
        own.info("third, ours")
        await asyncio.sleep(0)

    asyncio.run(main())
    assert [line["event"] for line in out.lines()] == [
        "first, ours",
        "second, a library's",
        "third, ours",
    ]


def test_outside_a_loop_a_line_is_written_at_once(out: Recorder) -> None:
    structlog.get_logger("pgcourier").info("migrated", version=23)
    assert [line["event"] for line in out.lines()] == ["migrated"]


def test_a_line_longer_than_pipe_buf_goes_whole_and_alone(out: Recorder) -> None:
    log = structlog.get_logger("pgcourier.relay")

    async def main() -> None:
        log.info("small")
        log.info("large", error="x" * (2 * PIPE_BUF))
        log.info("small again")
        await asyncio.sleep(0)

    asyncio.run(main())
    assert [line["event"] for line in out.lines()] == ["small", "large", "small again"]
    [large] = [w for w in out.writes if b'"large"' in w]
    assert large.count(b"\n") == 1


def _log_in_a_loops_last_turn(event: str) -> None:
    """Log ``event`` in the turn that stops a loop, then close it: its writing turn never comes."""
    loop = asyncio.new_event_loop()
    loop.call_soon(lambda: structlog.get_logger("pgcourier").info(event))
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.close()


def test_a_new_loop_writes_its_own_lines(out: Recorder) -> None:
    # asyncio.run(prepare_schema) then the relay's loop: the second loop must not count on a
    # turn of the first, which is closed.
    _log_in_a_loops_last_turn("in the first loop")

    async def second() -> list[str]:
        structlog.get_logger("pgcourier").info("in the second loop")
        await asyncio.sleep(0)
        return [line["event"] for line in out.lines()]

    assert asyncio.run(second()) == ["in the first loop", "in the second loop"]


def test_the_last_turns_lines_are_written_at_exit() -> None:
    _, lines = run_logging(
        """
        import asyncio
        loop = asyncio.new_event_loop()
        loop.call_soon(lambda: structlog.get_logger("pgcourier").info("last words"))
        loop.call_soon(loop.stop)
        loop.run_forever()
        loop.close()
        """
    )
    assert [line["event"] for line in lines] == ["last words"]


def test_flush_logs_writes_what_waits_at_once(out: Recorder) -> None:
    # The CLI calls it when a command returns, before it prints anything of its own.
    _log_in_a_loops_last_turn("the command's last line")
    assert out.writes == []
    flush_logs()
    assert [line["event"] for line in out.lines()] == ["the command's last line"]


async def _batched(batcher: LineBatcher, *messages: bytes) -> None:
    for message in messages:
        batcher.msg(message)
    await asyncio.sleep(0)


def test_a_write_holds_pipe_buf_to_the_byte_and_no_more() -> None:
    # Two lines of 2,048 bytes with their newlines: exactly 4,096, one write.
    exact = Recorder()
    asyncio.run(_batched(LineBatcher(exact), b"a" * 2047, b"b" * 2047))
    assert [len(w) for w in exact.writes] == [4096]
    # One byte more and the second line waits for a write of its own.
    over = Recorder()
    asyncio.run(_batched(LineBatcher(over), b"a" * 2047, b"b" * 2048))
    assert [len(w) for w in over.writes] == [2048, 2049]


class Reentering(Recorder):
    """A write during which this thread logs again, as a finalizer run by a garbage collection
    inside the write would ("Task was destroyed but it is pending!")."""

    def __init__(self) -> None:
        super().__init__()
        self.batcher: LineBatcher | None = None

    def write(self, data: Any) -> int:
        written = super().write(data)
        batcher, self.batcher = self.batcher, None
        if batcher is not None:
            batcher.flush()  # what the libraries' handler does before its own line
            batcher.msg(b'{"event":"from a finalizer"}')
        return written


def test_a_line_logged_while_a_write_is_under_way_neither_hangs_nor_repeats() -> None:
    out = Reentering()
    batcher = LineBatcher(out)
    out.batcher = batcher
    # In a thread, so that a batcher waiting on its own lock fails this test instead of hanging.
    worker = threading.Thread(target=batcher.msg, args=(b'{"event":"first"}',), daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "the thread waits on a lock it holds"
    assert [line["event"] for line in out.lines()] == ["first", "from a finalizer"]


class Broken(Recorder):
    def write(self, data: Any) -> int:
        if isinstance(data, bytes):
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(data)


def test_a_failing_write_never_raises_into_a_librarys_logging_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = Broken()
    with configured(broken):

        async def main() -> None:
            structlog.get_logger("pgcourier").info("waits for the turn")
            logging.getLogger("asyncpg.pool").warning("a library's line")  # must not raise

        asyncio.run(main())
    assert [line["event"] for line in broken.lines()] == ["a library's line"]
    assert "BrokenPipeError" in capsys.readouterr().err  # the standard library's report of it
