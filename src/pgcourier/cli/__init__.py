"""The ``pgcourier`` command: builds settings, configures logging once, runs asyncio.

Results go to stdout (JSON where it is data); logs go to stderr. Every failure a user can cause
ends with a non-zero exit and one readable line, never a traceback.

Split by role: :mod:`.parser` (the command tree), :mod:`.inputs` (argument types, secret
files), :mod:`.output` (JSON, tables, escaping), :mod:`.database` (the DSN and the one-connection
wrapper), and :mod:`.commands` (one module per resource).
"""

from __future__ import annotations

import sys

from pgcourier.cli.database import database
from pgcourier.cli.inputs import read_secret_files
from pgcourier.cli.output import _print_json, error_line, printable, render_text
from pgcourier.cli.parser import build_parser
from pgcourier.errors import ConfigurationError, PgCourierError
from pgcourier.logs import configure_logging, flush_logs
from pgcourier.settings import load_settings

__all__ = [
    "_print_json",
    "build_parser",
    "database",
    "error_line",
    "main",
    "printable",
    "read_secret_files",
    "render_text",
]


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
    configure_logging(settings.log_level, settings.log_format, cache=True)
    try:
        try:
            code: int = args.func(args, settings)
        finally:
            flush_logs()  # the lines of the command's last loop turn, before anything printed
        return code
    except PgCourierError as exc:
        print(error_line(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
