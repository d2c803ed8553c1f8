"""``pgcourier verify``: does a received webhook verify, and if not, exactly why.

No database: the answer is :func:`pgcourier.signing.check`'s. Exit status 0 when valid, 1 when
not (one line saying why), 2 for a usage error (argparse's, or an unreadable body file).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from multidict import CIMultiDict

from pgcourier import signing
from pgcourier.cli import inputs
from pgcourier.cli.output import _print_json, printable
from pgcourier.settings import Settings

# Far above any webhook body pgcourier sends (PGCOURIER_MAX_PAYLOAD_BYTES is at most 64 MiB).
_BODY_LIMIT = 128 * 1024 * 1024


def add_command(sub: Any) -> None:
    """``verify`` under the top-level subcommands ``sub``."""
    p = sub.add_parser(
        "verify",
        help="check a received webhook's signature: valid, or exactly why not",
        description="Exit status: 0 valid, 1 invalid (one line says why), 2 usage error.",
    )
    p.add_argument("--scheme", choices=signing.SCHEMES, default="standard")
    inputs.add_secret_option(p, "secret", "the secret the receiver verifies with")
    p.add_argument(
        "--header",
        action="append",
        type=inputs.header,
        default=[],
        metavar="'NAME: VALUE'",
        help="a header as received (repeat for each)",
    )
    p.add_argument(
        "--body-file", metavar="PATH", help="the exact body received (default: read stdin)"
    )
    p.add_argument(
        "--tolerance",
        type=inputs.seconds,
        default=signing.DEFAULT_TOLERANCE,
        help="how far the timestamp may be from now, e.g. 5m (the default) or 1h",
    )
    p.set_defaults(func=cmd_verify)


def _usage(message: str) -> int:
    print(f"pgcourier verify: error: {printable(message)}", file=sys.stderr)
    return 2


def _read_body(path: str | None) -> bytes:
    if path is None or path == "-":
        if sys.stdin is None:
            raise ValueError("there is no stdin to read the body from: give --body-file")
        data = sys.stdin.buffer.read(_BODY_LIMIT + 1)
    else:
        try:
            with open(path, "rb") as file:
                data = file.read(_BODY_LIMIT + 1)
        except OSError as exc:
            raise ValueError(f"--body-file: cannot read {path!r}: {exc.strerror or exc}") from exc
    if len(data) > _BODY_LIMIT:
        raise ValueError(f"the body is longer than {_BODY_LIMIT} bytes")
    return data


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    if args.secret is None:
        return _usage("give --secret or --secret-file")
    if args.secret_file == "-" and args.body_file in (None, "-"):
        return _usage("stdin cannot hold both the secret and the body: give --body-file")
    try:
        body = _read_body(args.body_file)
    except ValueError as exc:
        return _usage(str(exc))
    # Several values of one header count as one list, as a receiver's framework joins them.
    headers: CIMultiDict[str] = CIMultiDict(args.header)
    verdict = signing.check(args.scheme, headers, body, args.secret, args.tolerance)
    if getattr(args, "json", False):
        _print_json(verdict.as_dict())
    elif verdict.valid:
        print("valid")
    else:
        print(printable(f"invalid ({verdict.code}): {verdict.reason}"))
    return 0 if verdict.valid else 1
