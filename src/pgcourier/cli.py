"""The ``pgcourier`` command: builds settings, configures logging once, runs asyncio.

Results go to stdout (JSON where it is data); logs go to stderr. Every failure a user can cause
ends with a non-zero exit and one readable line, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any, NoReturn

import asyncpg
import structlog

from pgcourier import __version__, db, ops
from pgcourier.errors import ConfigurationError, InvalidInput, PgCourierError
from pgcourier.logs import configure_logging
from pgcourier.settings import Settings, load_settings

log = structlog.get_logger("pgcourier.cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block followed by the error.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The DSN to use: PGCOURIER_DATABASE_URL, or an embedded Postgres in PGCOURIER_DATA_DIR."""
    if settings.database_url:
        yield settings.database_url
        return
    embedded = db.EmbeddedPostgres(settings.data_dir.resolve())
    dsn = embedded.start()
    log.info("embedded Postgres ready", dsn=dsn, data_dir=str(embedded.data_dir))
    try:
        yield dsn
    finally:
        embedded.stop()


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


async def _with_conn(
    settings: Settings, dsn: str, action: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> Any:
    async with db.connection(dsn) as conn:
        if settings.auto_migrate:
            with db.translate_errors():
                await db.migrate(conn)
        else:
            with db.translate_errors():
                version = await db.schema_version(conn)
            if version < db.LATEST_VERSION:
                raise ConfigurationError(
                    f"the courier schema is at version {version}, this pgcourier needs "
                    f"{db.LATEST_VERSION}: run `pgcourier migrate`"
                )
        return await action(conn)


def _db_command(action: Callable[[argparse.Namespace, asyncpg.Connection], Awaitable[Any]]) -> Any:
    def command(args: argparse.Namespace, settings: Settings) -> int:
        with database(settings) as dsn:
            result = asyncio.run(_with_conn(settings, dsn, lambda conn: action(args, conn)))
        if result is not None:
            _print_json(result)
        return 0

    return command


# -- commands -----------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from pgcourier.runtime import prepare_schema

    with database(settings) as dsn:
        applied = asyncio.run(prepare_schema(dsn, settings))
    _print_json({"applied": applied, "version": db.LATEST_VERSION})
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from pgcourier.runtime import prepare_schema, serve

    with database(settings) as dsn:
        if settings.auto_migrate:
            asyncio.run(prepare_schema(dsn, settings))
        asyncio.run(serve(settings, dsn))
    return 0


def cmd_dsn(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings) as dsn:
        print(dsn)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from pgcourier.demo import run_demo

    return asyncio.run(run_demo(settings))


async def _endpoint_add(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.create_endpoint(
        conn,
        url=args.url,
        event_types=args.event,
        description=args.description,
        secret=args.secret,
    )


async def _endpoint_list(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.list_endpoints(conn)


async def _endpoint_show(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.get_endpoint(conn, args.id)


async def _events_list(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.list_events(
        conn,
        event_type=args.type,
        since=args.since,
        until=args.until,
        cursor=args.cursor,
        limit=args.limit,
    )


async def _events_show(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.get_event(conn, args.id)


async def _events_attempts(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.event_attempts(conn, args.id)


def _aware_time(text: str) -> datetime:
    try:
        return ops.parse_aware_time(text, field="time")
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc


async def _endpoint_enable(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.set_endpoint_enabled(conn, args.id, True)


async def _endpoint_disable(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.set_endpoint_enabled(conn, args.id, False)


async def _enqueue(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    event_id = await ops.enqueue(
        conn,
        args.event_type,
        args.payload,
        ordering_key=args.ordering_key,
        idempotency_key=args.idempotency_key,
    )
    return {"id": str(event_id)}


async def _dlq_list(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.list_dead(conn, limit=args.limit)


async def _dlq_replay(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    queued = await ops.replay_dead(conn, None if args.all else args.ids)
    return {"replayed": queued}


def _json_object(text: str) -> str:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"payload is not JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("payload must be a JSON object")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The full command tree."""
    parser = _Parser(prog="pgcourier", description="Postgres-native event relay.")
    parser.add_argument("--version", action="version", version=f"pgcourier {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("migrate", help="create or upgrade the courier schema").set_defaults(
        func=cmd_migrate
    )
    sub.add_parser("run", help="run the relay until SIGTERM").set_defaults(func=cmd_run)
    sub.add_parser(
        "demo", help="deliver sample events to a local receiver and verify their signatures"
    ).set_defaults(func=cmd_demo)
    sub.add_parser("dsn", help="print the database DSN (starts the embedded one)").set_defaults(
        func=cmd_dsn
    )

    enq = sub.add_parser("enqueue", help="add one event to the outbox")
    enq.add_argument("event_type")
    enq.add_argument("payload", type=_json_object, help="a JSON object")
    enq.add_argument("--ordering-key")
    enq.add_argument("--idempotency-key")
    enq.set_defaults(func=_db_command(_enqueue))

    endpoint = sub.add_parser("endpoint", help="manage webhook endpoints").add_subparsers(
        dest="endpoint_command", required=True, parser_class=_Parser
    )
    add = endpoint.add_parser("add", help="register an endpoint; prints its secret once")
    add.add_argument("--url", required=True)
    add.add_argument(
        "--event",
        action="append",
        required=True,
        metavar="PATTERN",
        help="event type pattern, '*' matches any characters (repeatable)",
    )
    add.add_argument("--description", default="")
    add.add_argument("--secret", help="a whsec_ secret to use instead of a generated one")
    add.set_defaults(func=_db_command(_endpoint_add))
    endpoint.add_parser("list", help="list endpoints").set_defaults(
        func=_db_command(_endpoint_list)
    )
    for name, action in (
        ("show", _endpoint_show),
        ("enable", _endpoint_enable),
        ("disable", _endpoint_disable),
    ):
        p = endpoint.add_parser(name, help=f"{name} an endpoint")
        p.add_argument("id")
        p.set_defaults(func=_db_command(action))

    events = sub.add_parser("events", help="inspect events").add_subparsers(
        dest="events_command", required=True, parser_class=_Parser
    )
    el = events.add_parser("list", help="events, newest first (JSON with next_cursor)")
    el.add_argument("--type")
    el.add_argument("--since", type=_aware_time, help="ISO-8601 with a zone")
    el.add_argument("--until", type=_aware_time, help="ISO-8601 with a zone")
    el.add_argument("--cursor", help="next_cursor from the previous page")
    el.add_argument("--limit", type=int, default=100)
    el.set_defaults(func=_db_command(_events_list))
    for name, action, text in (
        ("show", _events_show, "one event and its status at each endpoint"),
        ("attempts", _events_attempts, "every attempt made for one event"),
    ):
        p = events.add_parser(name, help=text)
        p.add_argument("id")
        p.set_defaults(func=_db_command(action))

    dlq = sub.add_parser("dlq", help="dead letters").add_subparsers(
        dest="dlq_command", required=True, parser_class=_Parser
    )
    dl = dlq.add_parser("list", help="list dead deliveries, newest first")
    dl.add_argument("--limit", type=int, default=100)
    dl.set_defaults(func=_db_command(_dlq_list))
    rp = dlq.add_parser("replay", help="queue dead deliveries again (same webhook-id)")
    group = rp.add_mutually_exclusive_group(required=True)
    group.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
    group.add_argument("--all", action="store_true")
    rp.set_defaults(func=_db_command(_dlq_replay))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pgcourier`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        for line in str(exc).split("; "):
            print(f"pgcourier: invalid setting {line}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        code: int = args.func(args, settings)
        return code
    except PgCourierError as exc:
        message = " ".join(str(exc).split())  # always one line
        print(f"pgcourier: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
