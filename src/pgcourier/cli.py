"""The ``pgcourier`` command: builds settings, configures logging once, runs asyncio.

Results go to stdout (JSON where it is data); logs go to stderr. Every failure a user can cause
ends with a non-zero exit and one readable line, never a traceback.

Text output shows control characters escaped (``\\x1b``): response bodies and errors come from
receivers, and raw escape sequences would reach the operator's terminal (clear it, retitle it,
hide lines). JSON output is escaped by ``json.dumps`` already.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any, NoReturn

import asyncpg
import structlog

from pgcourier import __version__, db, ops
from pgcourier.errors import ConfigurationError, InvalidInput, PgCourierError
from pgcourier.logs import configure_logging
from pgcourier.policy import parse_duration
from pgcourier.settings import Settings, load_settings
from pgcourier.signing import SCHEMES

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
    # ensure_ascii (the default) writes every control character, C1 included, as \uXXXX.
    print(json.dumps(value, indent=2, default=str))


# C0 (newline and tab too: one value, one line), DEL, C1 (0x9b is a one-byte CSI), and the
# Unicode line separators and bidirectional overrides that make text read other than it is.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every control character written as an escape (``\\x1b``, ``\\u202e``)."""

    def escaped(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROL.sub(escaped, text)


def _cell(value: Any, width: int = 40) -> str:
    text = printable(value if isinstance(value, str) else json.dumps(value, default=str))
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    columns = list(rows[0])
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def render_text(value: Any) -> str:
    """Human-readable output: lists as tables, objects as ``key: value`` lines."""
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return _table(value)
    if not isinstance(value, dict):
        return _cell(value, width=10_000)
    lines = []
    for key, item in value.items():
        if isinstance(item, list) and item and all(isinstance(v, dict) for v in item):
            lines.append(f"{key}:")
            lines += ["  " + line for line in _table(item).splitlines()]
        else:
            lines.append(f"{printable(str(key))}: {_cell(item, width=10_000)}")
    return "\n".join(lines)


def _output(args: argparse.Namespace, value: Any) -> None:
    if getattr(args, "json", False):
        _print_json(value)
    else:
        print(render_text(value))


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
            _output(args, result)
        return 0

    return command


# -- commands -----------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from pgcourier.runtime import prepare_schema

    with database(settings) as dsn:
        applied = asyncio.run(prepare_schema(dsn, settings))
    _output(args, {"applied": applied, "version": db.LATEST_VERSION})
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from pgcourier.runtime import prepare_schema, serve

    with database(settings) as dsn:
        if settings.auto_migrate:
            asyncio.run(prepare_schema(dsn, settings))
        asyncio.run(serve(settings, dsn))
    return 0


def cmd_admin(args: argparse.Namespace, settings: Settings) -> int:
    from pgcourier.runtime import prepare_schema, serve_admin

    with database(settings) as dsn:
        if settings.auto_migrate:
            asyncio.run(prepare_schema(dsn, settings))
        asyncio.run(serve_admin(settings, dsn))
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
        enabled=not args.disabled,
        timeout_seconds=args.timeout,
        headers=dict(args.header),
        signature_scheme=args.scheme,
        permanent_statuses=args.permanent_status,
        max_in_flight=args.max_in_flight,
        rate_limit=args.rate_limit,
        kind="slack" if args.slack_channel else "webhook",
        slack_channel=args.slack_channel,
        slack_token=args.slack_token,
        template=args.template,
    )


async def _endpoint_update(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    changes: dict[str, Any] = {}
    for name in ("url", "description", "enabled"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.event is not None:
        changes["event_types"] = args.event
    if args.timeout is not None:
        changes["timeout_seconds"] = None if args.timeout == "default" else args.timeout
    if args.clear_headers or args.header:
        changes["headers"] = dict(args.header or [])
    if args.scheme is not None:
        changes["signature_scheme"] = args.scheme
    if args.clear_permanent_statuses or args.permanent_status:
        changes["permanent_statuses"] = args.permanent_status or []
    if args.max_in_flight is not None:
        changes["max_in_flight"] = args.max_in_flight
    if args.rate_limit is not None:
        changes["rate_limit"] = None if args.rate_limit == "none" else args.rate_limit
    for name in ("slack_channel", "slack_token", "template"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name) or None  # --template '' clears it
    if not changes:
        raise InvalidInput("nothing to change: give at least one option (see --help)")
    return await ops.update_endpoint(conn, args.id, changes)


async def _endpoint_rotate(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.rotate_secret(conn, args.id, secret=args.secret, grace_seconds=args.grace)


async def _endpoint_delete(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return {"deleted": args.id, "discarded": await ops.delete_endpoint(conn, args.id)}


async def _endpoint_stats(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.endpoint_stats(conn, args.id, window_seconds=args.window)


async def _endpoint_recover(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    queued = await ops.recover_endpoint(conn, args.id, since=args.since)
    return {"recovered": queued, "count": len(queued)}


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


def _dead_filter(args: argparse.Namespace) -> ops.DeadFilter:
    return ops.DeadFilter(
        endpoint_id=args.endpoint, event_type=args.type, since=args.since, until=args.until
    )


async def _dlq_list(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    page = await ops.list_dead(conn, _dead_filter(args), cursor=args.cursor, limit=args.limit)
    return page if args.json else page["data"]


async def _dlq_show(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.get_dead(conn, args.id)


async def _dlq_discard(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return {"discarded": [await ops.discard_dead(conn, i) for i in args.ids]}


async def _dlq_replay(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    where = _dead_filter(args)
    if args.ids and (args.all or where != ops.DeadFilter()):
        raise InvalidInput("give either dead-letter ids or --all with filters, not both")
    if not args.ids and not args.all:
        raise InvalidInput("give dead-letter ids, or --all (optionally with filters)")
    queued = await ops.replay_dead(conn, args.ids or None, where)
    return {"replayed": queued, "count": len(queued)}


def _json_object(text: str) -> str:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"payload is not JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("payload must be a JSON object")
    return text


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME:VALUE")
    return name.strip(), value.strip()


def _timeout(text: str) -> float | str:
    if text == "default":
        return text
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from exc


def _rate(text: str) -> float | str:
    if text == "none":
        return text
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of requests/s") from exc


def _seconds(text: str) -> int:
    try:
        return int(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc


# -- secrets from files ------------------------------------------------------------------------
# A secret given as an argument is visible to every user in `ps` and lands in shell history;
# --secret-file / --slack-token-file read it from a file or, with "-", from stdin instead.
_SECRET_FILES = (("secret_file", "secret"), ("slack_token_file", "slack_token"))
_SECRET_FILE_LIMIT = 64 * 1024  # far above any secret; /dev/zero must not fill the memory


def _add_secret_option(p: argparse.ArgumentParser, name: str, help_text: str) -> None:
    """``--NAME`` and ``--NAME-file PATH``, one or the other."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(f"--{name}", help=f"{help_text} (visible in ps: prefer --{name}-file)")
    group.add_argument(
        f"--{name}-file", metavar="PATH", help=f"read --{name} from PATH, or stdin with '-'"
    )


def _read_secret(path: str, option: str) -> str:
    """The one-line secret in ``path`` ('-': stdin), without its trailing newline."""
    try:
        if path == "-":
            if sys.stdin is None:
                raise ValueError(f"{option}: there is no stdin to read")
            raw = sys.stdin.buffer.read(_SECRET_FILE_LIMIT + 1)
        else:
            with open(path, "rb") as file:
                raw = file.read(_SECRET_FILE_LIMIT + 1)
    except OSError as exc:
        raise ValueError(f"{option}: cannot read {path!r}: {exc.strerror or exc}") from exc
    if len(raw) > _SECRET_FILE_LIMIT:
        raise ValueError(f"{option}: {path!r} is longer than {_SECRET_FILE_LIMIT} bytes")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{option}: {path!r} is not UTF-8 text") from exc
    # One trailing newline is the file's (echo, editors), not the secret's.
    text = text.removesuffix("\n").removesuffix("\r")
    if not text.strip():
        raise ValueError(f"{option}: {path!r} is empty")
    return text


def read_secret_files(args: argparse.Namespace) -> None:
    """Replace ``--secret-file``/``--slack-token-file`` by the values they name, in ``args``."""
    given = [(f, d) for f, d in _SECRET_FILES if getattr(args, f, None) is not None]
    if sum(getattr(args, f) == "-" for f, _ in given) > 1:
        raise ValueError("only one option can read stdin ('-')")
    for file_attr, dest in given:
        option = "--" + file_attr.replace("_", "-")
        setattr(args, dest, _read_secret(getattr(args, file_attr), option))


def _add_dead_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", metavar="ID", help="only this endpoint's dead letters")
    p.add_argument("--type", help="only this event type")
    p.add_argument("--since", type=_aware_time, help="dead at or after (ISO-8601 with a zone)")
    p.add_argument("--until", type=_aware_time, help="dead before (ISO-8601 with a zone)")


def build_parser() -> argparse.ArgumentParser:
    """The full command tree."""
    parser = _Parser(prog="pgcourier", description="Postgres-native event relay.")
    parser.add_argument("--version", action="version", version=f"pgcourier {__version__}")
    parser.add_argument("--json", action="store_true", help="print results as JSON (scripts)")
    # --json is accepted after the command too; SUPPRESS keeps the top-level value otherwise.
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    class _Sub(_Parser):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("parents", [common])
            super().__init__(**kwargs)

    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Sub)

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
    sub.add_parser(
        "admin", help="serve the admin API alone, without a relay, until SIGTERM"
    ).set_defaults(func=cmd_admin)

    enq = sub.add_parser("enqueue", help="add one event to the outbox")
    enq.add_argument("event_type")
    enq.add_argument("payload", type=_json_object, help="a JSON object")
    enq.add_argument("--ordering-key")
    enq.add_argument("--idempotency-key")
    enq.set_defaults(func=_db_command(_enqueue))

    endpoint = sub.add_parser("endpoint", help="manage webhook endpoints").add_subparsers(
        dest="endpoint_command", required=True, parser_class=_Sub
    )
    add = endpoint.add_parser("add", help="register an endpoint; prints its secret once")
    add.add_argument("--url", help="the webhook's URL (not needed with --slack-channel)")
    add.add_argument("--slack-channel", help="post to this Slack channel instead, e.g. #requests")
    _add_secret_option(add, "slack-token", "this endpoint's Slack bot token (default: the relay's)")
    add.add_argument("--template", help="message text with {data.field} placeholders (Slack)")
    add.add_argument(
        "--event",
        action="append",
        required=True,
        metavar="PATTERN",
        help="event type pattern, '*' matches any characters (repeatable)",
    )
    add.add_argument("--description", default="")
    _add_secret_option(add, "secret", "a whsec_ secret to use instead of a generated one")
    add.add_argument("--timeout", type=float, help="request timeout in seconds (1-300)")
    add.add_argument("--header", type=_header, action="append", default=[], metavar="NAME:VALUE")
    add.add_argument("--disabled", action="store_true", help="register it disabled")
    add.add_argument("--scheme", choices=SCHEMES, default="standard", help="signature scheme")
    add.add_argument(
        "--permanent-status",
        type=int,
        action="append",
        default=[],
        metavar="STATUS",
        help="a status that dead-letters at once, e.g. 404 (repeatable)",
    )
    add.add_argument("--max-in-flight", type=int, default=10, help="concurrent requests (10)")
    add.add_argument("--rate-limit", type=float, help="requests per second (default: none)")
    add.set_defaults(func=_db_command(_endpoint_add))
    up = endpoint.add_parser("update", help="change an endpoint's settings")
    up.add_argument("id")
    up.add_argument("--url")
    up.add_argument("--event", action="append", metavar="PATTERN", help="replaces all patterns")
    up.add_argument("--description")
    up.add_argument(
        "--timeout", type=_timeout, help="seconds (1-300), or 'default' for the relay's"
    )
    up.add_argument(
        "--header", type=_header, action="append", metavar="NAME:VALUE", help="replaces all"
    )
    up.add_argument("--clear-headers", action="store_true")
    up.add_argument("--scheme", choices=SCHEMES, help="signature scheme")
    up.add_argument(
        "--permanent-status", type=int, action="append", metavar="STATUS", help="replaces all"
    )
    up.add_argument("--clear-permanent-statuses", action="store_true")
    up.add_argument("--max-in-flight", type=int)
    up.add_argument("--rate-limit", type=_rate, help="requests per second, or 'none'")
    up.add_argument("--slack-channel")
    _add_secret_option(up, "slack-token", "this endpoint's Slack bot token")
    up.add_argument("--template", help="'' clears it")
    state = up.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="enabled", action="store_true", default=None)
    state.add_argument("--disable", dest="enabled", action="store_false", default=None)
    up.set_defaults(func=_db_command(_endpoint_update))
    rot = endpoint.add_parser(
        "rotate-secret", help="new secret, printed once; the old one signs too for --grace"
    )
    rot.add_argument("id")
    _add_secret_option(rot, "secret", "a whsec_ secret to use instead of a generated one")
    rot.add_argument(
        "--grace", type=_seconds, default=ops.DEFAULT_GRACE_SECONDS, help="e.g. 24h (default), 0"
    )
    rot.set_defaults(func=_db_command(_endpoint_rotate))
    st = endpoint.add_parser("stats", help="attempts, success rate, latency, open deliveries")
    st.add_argument("id")
    st.add_argument("--window", type=_seconds, default=86400, help="e.g. 1h, 24h (default)")
    st.set_defaults(func=_db_command(_endpoint_stats))
    rec = endpoint.add_parser("recover", help="re-queue failed and dead deliveries since a time")
    rec.add_argument("id")
    rec.add_argument("--since", type=_aware_time, required=True, help="ISO-8601 with a zone")
    rec.set_defaults(func=_db_command(_endpoint_recover))
    endpoint.add_parser("list", help="list endpoints").set_defaults(
        func=_db_command(_endpoint_list)
    )
    for name, action in (
        ("show", _endpoint_show),
        ("enable", _endpoint_enable),
        ("disable", _endpoint_disable),
        ("delete", _endpoint_delete),
    ):
        p = endpoint.add_parser(name, help=f"{name} an endpoint")
        p.add_argument("id")
        p.set_defaults(func=_db_command(action))

    events = sub.add_parser("events", help="inspect events").add_subparsers(
        dest="events_command", required=True, parser_class=_Sub
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
        dest="dlq_command", required=True, parser_class=_Sub
    )
    dl = dlq.add_parser("list", help="list dead deliveries, newest first")
    _add_dead_filters(dl)
    dl.add_argument("--cursor", help="next_cursor from the previous page (with --json)")
    dl.add_argument("--limit", type=int, default=100)
    dl.set_defaults(func=_db_command(_dlq_list))
    ds = dlq.add_parser("show", help="one dead letter and its event")
    ds.add_argument("id")
    ds.set_defaults(func=_db_command(_dlq_show))
    rp = dlq.add_parser(
        "replay", help="queue dead deliveries again (same webhook-id): IDs, or --all [filters]"
    )
    rp.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
    rp.add_argument("--all", action="store_true", help="every dead letter matching the filters")
    _add_dead_filters(rp)
    rp.set_defaults(func=_db_command(_dlq_replay))
    dd = dlq.add_parser("discard", help="throw dead letters away for good (recorded)")
    dd.add_argument("ids", nargs="+", metavar="ID")
    dd.set_defaults(func=_db_command(_dlq_discard))
    return parser


def error_line(exc: Exception) -> str:
    """The one line a failure prints: whitespace folded, control characters escaped (messages
    can quote a database's or a receiver's text)."""
    return f"pgcourier: error: {printable(' '.join(str(exc).split()))}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pgcourier`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        read_secret_files(args)
    except ValueError as exc:
        parser.error(printable(str(exc)))
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
        print(error_line(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
