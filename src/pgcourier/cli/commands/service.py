"""Long-running and setup commands: migrate, run, admin, dsn, demo."""

from __future__ import annotations

import argparse
import asyncio

from pgcourier import db
from pgcourier.cli.database import database
from pgcourier.cli.output import output
from pgcourier.settings import Settings


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from pgcourier.runtime import prepare_schema

    with database(settings) as dsn:
        applied = asyncio.run(prepare_schema(dsn, settings))
    output(args, {"applied": applied, "version": db.LATEST_VERSION})
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
