"""``pgcourier event-types ...``: the event-type catalog (add, update, list, show, delete) and the
Markdown catalog for receivers (docs)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import asyncpg

from pgcourier import catalog_docs, ops
from pgcourier.cli.database import db_command

_FILE_LIMIT = 1024 * 1024  # four times what the catalog stores: a clear refusal, not a hang


def json_file(path: str) -> Any:
    """The JSON value in ``path`` ('-': stdin); argparse prints a failure as one line."""
    try:
        if path == "-":
            raw = sys.stdin.buffer.read(_FILE_LIMIT + 1)
        else:
            with open(path, "rb") as file:
                raw = file.read(_FILE_LIMIT + 1)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path!r}: {exc.strerror or exc}") from exc
    if len(raw) > _FILE_LIMIT:
        raise argparse.ArgumentTypeError(f"{path!r} is larger than {_FILE_LIMIT} bytes")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"{path!r} is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise argparse.ArgumentTypeError(f"{path!r} is nested too deeply") from exc


async def event_type_add(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.create_event_type(
        conn,
        args.name,
        description=args.description or "",
        schema=args.schema,
        example=args.example,
    )


async def event_type_update(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    changes: dict[str, Any] = {}
    if args.description is not None:
        changes["description"] = args.description
    for name in ("schema", "example"):
        if getattr(args, f"no_{name}"):
            changes[name] = None
        elif getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    return await ops.update_event_type(conn, args.name, changes)


async def event_type_list(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    rows = await ops.list_event_types(conn)
    if getattr(args, "json", False):
        return {"data": rows}
    # A table shows what fits a line; `show NAME` or --json gives the schema and example.
    return [
        {
            "name": r["name"],
            "description": r["description"],
            "schema": r["schema"] is not None,
            "example": r["example"] is not None,
            "updated_at": r["updated_at"],
        }
        for r in rows
    ]


async def event_type_show(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.get_event_type(conn, args.name)


async def event_type_delete(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    return await ops.delete_event_type(conn, args.name)


async def event_type_docs(args: argparse.Namespace, conn: asyncpg.Connection) -> Any:
    text = catalog_docs.render(await ops.list_event_types(conn))
    if args.output is None:
        sys.stdout.write(text)
        return None
    await asyncio.to_thread(Path(args.output).write_text, text, encoding="utf-8")
    return {"written": args.output}


def add_commands(sub: Any) -> None:
    """``event-types ...`` under the top-level subcommands ``sub``."""
    top = sub.add_parser("event-types", help="the event-type catalog and its docs for receivers")
    cmds = top.add_subparsers(dest="event_types_command", required=True, parser_class=type(top))
    add = cmds.add_parser("add", help="register an event type")
    add.add_argument("name")
    _content_options(add)
    add.set_defaults(func=db_command(event_type_add))
    up = cmds.add_parser("update", help="change an event type's description, schema or example")
    up.add_argument("name")
    _content_options(up, removable=True)
    up.set_defaults(func=db_command(event_type_update))
    cmds.add_parser("list", help="list event types").set_defaults(func=db_command(event_type_list))
    for name, action, words in (
        ("show", event_type_show, "one event type with its schema and example"),
        ("delete", event_type_delete, "remove an event type (in strict mode: retire it)"),
    ):
        p = cmds.add_parser(name, help=words)
        p.add_argument("name")
        p.set_defaults(func=db_command(action))
    docs = cmds.add_parser("docs", help="write the catalog as Markdown for receivers")
    docs.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    docs.set_defaults(func=db_command(event_type_docs))


def _content_options(p: argparse.ArgumentParser, *, removable: bool = False) -> None:
    p.add_argument("--description", help="what the event means, for receivers")
    for name, words in (
        ("schema", "JSON Schema (2020-12) the payload must match ('-': stdin)"),
        ("example", "an example payload, a JSON object ('-': stdin)"),
    ):
        group = p.add_mutually_exclusive_group() if removable else p
        group.add_argument(f"--{name}", type=json_file, metavar="FILE", help=words)
        if removable:
            group.add_argument(f"--no-{name}", action="store_true", help=f"remove the {name}")
