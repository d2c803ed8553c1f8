"""Long-running and setup commands: migrate, run, admin, dsn, demo."""

from __future__ import annotations

import argparse
import asyncio

import structlog

from pgcourier import db, eventloop
from pgcourier.cli.database import database
from pgcourier.cli.output import output
from pgcourier.processes import Supervisor
from pgcourier.settings import Settings


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from pgcourier.runtime import prepare_schema

    with database(settings) as dsn:
        applied = asyncio.run(prepare_schema(dsn, settings))
    output(args, {"applied": applied, "version": db.LATEST_VERSION})
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from pgcourier.runtime import prepare_schema, serve

    if args.process_index is not None:
        # A child of `run --processes N`: every line it logs says which one (asyncio.run's task
        # starts from a copy of this context, so the binding reaches every task).
        # (The children share the parent's stderr: configure_logging writes whole lines, never
        # more than PIPE_BUF, 4 KiB, at once, so a pipe receives them unbroken.)
        structlog.contextvars.bind_contextvars(process=args.process_index)
    with database(settings) as dsn:
        if settings.auto_migrate:
            asyncio.run(prepare_schema(dsn, settings))
        if args.processes == 1:
            eventloop.run(serve(settings, dsn), settings.event_loop)
            return 0
        # The parent holds the database (the embedded server stays up while it lives) and
        # migrated it once; the children connect to the DSN it hands them.
        supervisor = Supervisor(dsn, args.processes, shutdown_timeout=settings.shutdown_timeout)
        return asyncio.run(supervisor.run())


def cmd_admin(args: argparse.Namespace, settings: Settings) -> int:
    from pgcourier.runtime import prepare_schema, serve_admin

    with database(settings) as dsn:
        if settings.auto_migrate:
            asyncio.run(prepare_schema(dsn, settings))
        eventloop.run(serve_admin(settings, dsn), settings.event_loop)
    return 0


def cmd_dsn(args: argparse.Namespace, settings: Settings) -> int:
    with database(settings) as dsn:
        print(dsn)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from pgcourier.demo import run_demo

    return asyncio.run(run_demo(settings))
