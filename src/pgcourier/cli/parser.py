"""The command tree: every subcommand, its options, and the function that runs it."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from pgcourier import __version__, ops
from pgcourier.cli import inputs
from pgcourier.cli.commands import (
    dead_letters,
    endpoints,
    events,
    keys,
    retention,
    service,
    tenants,
)
from pgcourier.cli.commands import event_types as event_types_commands
from pgcourier.cli.commands import verify as verify_command
from pgcourier.cli.database import db_command, keyed_db_command
from pgcourier.signing import SCHEMES


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block followed by the error.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_dead_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", metavar="ID", help="only this endpoint's dead letters")
    p.add_argument("--type", help="only this event type")
    p.add_argument(
        "--since", type=inputs.aware_time, help="dead at or after (ISO-8601 with a zone)"
    )
    p.add_argument("--until", type=inputs.aware_time, help="dead before (ISO-8601 with a zone)")
    p.add_argument("--tenant", help="only this tenant's events")


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
        func=service.cmd_migrate
    )
    run = sub.add_parser("run", help="run the relay until SIGTERM")
    run.add_argument(
        "--processes",
        type=inputs.processes,
        default=1,
        metavar="N",
        help="run N relay processes under one parent (one per core); default 1, no parent",
    )
    # Set by the parent of --processes N on each child: the `process` field of its log lines.
    run.add_argument("--process-index", type=int, help=argparse.SUPPRESS)
    run.set_defaults(func=service.cmd_run)
    sub.add_parser(
        "demo", help="deliver sample events to a local receiver and verify their signatures"
    ).set_defaults(func=service.cmd_demo)
    sub.add_parser("dsn", help="print the database DSN (starts the embedded one)").set_defaults(
        func=service.cmd_dsn
    )
    sub.add_parser(
        "admin", help="serve the admin API alone, without a relay, until SIGTERM"
    ).set_defaults(func=service.cmd_admin)

    enq = sub.add_parser("enqueue", help="add one event to the outbox")
    enq.add_argument("event_type")
    enq.add_argument("payload", type=inputs.json_object, help="a JSON object")
    enq.add_argument("--ordering-key")
    enq.add_argument("--idempotency-key")
    enq.add_argument("--tenant", help="only this tenant's endpoints (and untenanted ones) get it")
    enq.add_argument(
        "--endpoint", metavar="ID", help="deliver to this endpoint only, whatever its patterns"
    )
    enq.set_defaults(func=db_command(events.enqueue))

    endpoint = sub.add_parser("endpoint", help="manage webhook endpoints").add_subparsers(
        dest="endpoint_command", required=True, parser_class=_Sub
    )
    add = endpoint.add_parser("add", help="register an endpoint; prints its secret once")
    add.add_argument("--url", help="the webhook's URL (not needed with --slack-channel)")
    add.add_argument("--slack-channel", help="post to this Slack channel instead, e.g. #requests")
    inputs.add_secret_option(
        add, "slack-token", "this endpoint's Slack bot token (default: the relay's)"
    )
    add.add_argument("--template", help="message text with {data.field} placeholders (Slack)")
    add.add_argument(
        "--event",
        action="append",
        required=True,
        metavar="PATTERN",
        help="event type pattern, '*' matches any characters (repeatable)",
    )
    add.add_argument("--description", default="")
    inputs.add_secret_option(add, "secret", "a whsec_ secret to use instead of a generated one")
    add.add_argument("--timeout", type=float, help="request timeout in seconds (1-300)")
    add.add_argument(
        "--header", type=inputs.header, action="append", default=[], metavar="NAME:VALUE"
    )
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
    add.add_argument("--tenant", help="receive only this tenant's events (default: every tenant's)")
    add.set_defaults(func=keyed_db_command(endpoints.endpoint_add))
    up = endpoint.add_parser("update", help="change an endpoint's settings")
    up.add_argument("id")
    up.add_argument("--url")
    up.add_argument("--event", action="append", metavar="PATTERN", help="replaces all patterns")
    up.add_argument("--description")
    up.add_argument(
        "--timeout", type=inputs.timeout, help="seconds (1-300), or 'default' for the relay's"
    )
    up.add_argument(
        "--header", type=inputs.header, action="append", metavar="NAME:VALUE", help="replaces all"
    )
    up.add_argument("--clear-headers", action="store_true")
    up.add_argument("--scheme", choices=SCHEMES, help="signature scheme")
    up.add_argument(
        "--permanent-status", type=int, action="append", metavar="STATUS", help="replaces all"
    )
    up.add_argument("--clear-permanent-statuses", action="store_true")
    up.add_argument("--max-in-flight", type=int)
    up.add_argument("--rate-limit", type=inputs.rate, help="requests per second, or 'none'")
    up.add_argument("--slack-channel")
    inputs.add_secret_option(up, "slack-token", "this endpoint's Slack bot token")
    up.add_argument("--template", help="'' clears it")
    up.add_argument("--tenant", help="'' removes it: the endpoint then gets every tenant's events")
    state = up.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="enabled", action="store_true", default=None)
    state.add_argument("--disable", dest="enabled", action="store_false", default=None)
    up.set_defaults(func=keyed_db_command(endpoints.endpoint_update))
    rot = endpoint.add_parser(
        "rotate-secret", help="new secret, printed once; the old one signs too for --grace"
    )
    rot.add_argument("id")
    inputs.add_secret_option(rot, "secret", "a whsec_ secret to use instead of a generated one")
    rot.add_argument(
        "--grace",
        type=inputs.seconds,
        default=ops.DEFAULT_GRACE_SECONDS,
        help="e.g. 24h (default), 0",
    )
    rot.set_defaults(func=keyed_db_command(endpoints.endpoint_rotate))
    st = endpoint.add_parser("stats", help="attempts, success rate, latency, open deliveries")
    st.add_argument("id")
    st.add_argument("--window", type=inputs.seconds, default=86400, help="e.g. 1h, 24h (default)")
    st.set_defaults(func=db_command(endpoints.endpoint_stats))
    rec = endpoint.add_parser("recover", help="re-queue failed and dead deliveries since a time")
    rec.add_argument("id")
    rec.add_argument("--since", type=inputs.aware_time, required=True, help="ISO-8601 with a zone")
    rec.set_defaults(func=db_command(endpoints.endpoint_recover))
    ls = endpoint.add_parser("list", help="list endpoints")
    ls.add_argument("--tenant", help="only this tenant's endpoints")
    ls.set_defaults(func=db_command(endpoints.endpoint_list))
    et = endpoint.add_parser(
        "test", help="send a signed test event to this endpoint alone; print the attempt"
    )
    et.add_argument("id")
    et.add_argument("--type", help=f"the event type (default {ops.TEST_EVENT_TYPE})")
    et.add_argument(
        "--wait", type=float, metavar="SECONDS", help="default: the endpoint's timeout + 5"
    )
    et.set_defaults(func=db_command(endpoints.endpoint_test))
    for name, action in (
        ("show", endpoints.endpoint_show),
        ("enable", endpoints.endpoint_enable),
        ("disable", endpoints.endpoint_disable),
    ):
        p = endpoint.add_parser(name, help=f"{name} an endpoint")
        p.add_argument("id")
        p.set_defaults(func=db_command(action))
    rm = endpoint.add_parser("delete", help="delete an endpoint")
    rm.add_argument("id")
    rm.set_defaults(func=keyed_db_command(endpoints.endpoint_delete))

    event_cmds = sub.add_parser("events", help="inspect events").add_subparsers(
        dest="events_command", required=True, parser_class=_Sub
    )
    el = event_cmds.add_parser("list", help="events, newest first (JSON with next_cursor)")
    el.add_argument("--type")
    el.add_argument("--since", type=inputs.aware_time, help="ISO-8601 with a zone")
    el.add_argument("--until", type=inputs.aware_time, help="ISO-8601 with a zone")
    el.add_argument("--cursor", help="next_cursor from the previous page")
    el.add_argument("--limit", type=int, default=100)
    el.add_argument("--tenant", help="only this tenant's events")
    el.set_defaults(func=db_command(events.events_list))
    es = event_cmds.add_parser("show", help="one event and its status at each endpoint")
    es.add_argument("id")
    es.set_defaults(func=db_command(events.events_show))
    ea = event_cmds.add_parser(
        "attempts", help="the attempts made for one event, oldest first (with next_cursor)"
    )
    ea.add_argument("id")
    # A page also ends early once its response bodies hold 4 MiB: next_cursor says if more follow.
    ea.add_argument("--cursor", help="next_cursor from the previous page")
    ea.add_argument("--limit", type=int, default=100)
    ea.set_defaults(func=db_command(events.events_attempts))

    dlq = sub.add_parser("dlq", help="dead letters").add_subparsers(
        dest="dlq_command", required=True, parser_class=_Sub
    )
    dl = dlq.add_parser("list", help="list dead deliveries, newest first")
    _add_dead_filters(dl)
    dl.add_argument("--cursor", help="next_cursor from the previous page (with --json)")
    dl.add_argument("--limit", type=int, default=100)
    dl.set_defaults(func=db_command(dead_letters.dlq_list))
    ds = dlq.add_parser("show", help="one dead letter and its event")
    ds.add_argument("id")
    ds.set_defaults(func=db_command(dead_letters.dlq_show))
    rp = dlq.add_parser(
        "replay", help="queue dead deliveries again (same webhook-id): IDs, or --all [filters]"
    )
    rp.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
    rp.add_argument("--all", action="store_true", help="every dead letter matching the filters")
    _add_dead_filters(rp)
    rp.set_defaults(func=db_command(dead_letters.dlq_replay))
    dd = dlq.add_parser("discard", help="throw dead letters away for good (recorded)")
    dd.add_argument("ids", nargs="+", metavar="ID")
    dd.set_defaults(func=db_command(dead_letters.dlq_discard))

    tenant_cmds = sub.add_parser("tenant", help="per-tenant views").add_subparsers(
        dest="tenant_command", required=True, parser_class=_Sub
    )
    ts = tenant_cmds.add_parser("stats", help="a tenant's endpoints: attempts, latency, backlog")
    ts.add_argument("name")
    ts.add_argument("--window", type=inputs.seconds, default=86400, help="e.g. 1h, 24h (default)")
    ts.set_defaults(func=db_command(tenants.tenant_stats))
    verify_command.add_command(sub)
    event_types_commands.add_commands(sub)
    key_cmds = sub.add_parser(
        "keys", help="keys that encrypt endpoint secrets and Slack tokens at rest"
    ).add_subparsers(dest="keys_command", required=True, parser_class=_Sub)
    key_cmds.add_parser("generate", help="print a new key for PGCOURIER_SECRET_KEY").set_defaults(
        func=keys.keys_generate
    )
    key_cmds.add_parser(
        "rotate", help="re-encrypt every stored secret under the first key; then drop the others"
    ).set_defaults(func=keyed_db_command(keys.keys_rotate))
    pr = sub.add_parser(
        "prune",
        help="run one retention pass now and print what it removed per table "
        "(PGCOURIER_RETENTION, PGCOURIER_DEAD_RETENTION)",
    )
    pr.add_argument(
        "--dry-run", action="store_true", help="count what it would remove; change nothing"
    )
    pr.set_defaults(func=retention.cmd_prune)
    return parser
