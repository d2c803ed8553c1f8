"""Argument types and secret files: command-line text turned into values, or one clear error.

Each type raises :class:`argparse.ArgumentTypeError`, which argparse prints as one line with
exit status 2; nothing here touches the database.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from pgcourier import ops
from pgcourier.errors import InvalidInput
from pgcourier.policy import parse_duration
from pgcourier.processes import MAX_PROCESSES


def aware_time(text: str) -> datetime:
    try:
        return ops.parse_aware_time(text, field="time")
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc


def json_object(text: str) -> str:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"payload is not JSON: {exc.msg}") from exc
    except RecursionError as exc:
        # Python's parser gives up past ~1000 levels; the database would refuse anything past
        # 64 (migration 0005) anyway, so this is bad input, not a bug.
        raise argparse.ArgumentTypeError("payload is nested too deeply to parse") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("payload must be a JSON object")
    return text


def header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME:VALUE")
    return name.strip(), value.strip()


def timeout(text: str) -> float | str:
    if text == "default":
        return text
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from exc


def rate(text: str) -> float | str:
    if text == "none":
        return text
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of requests/s") from exc


def processes(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_PROCESSES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to {MAX_PROCESSES}")
    return int(text)


def seconds(text: str) -> int:
    try:
        return int(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc


# -- secrets from files ------------------------------------------------------------------------
# A secret given as an argument is visible to every user in `ps` and lands in shell history;
# --secret-file / --slack-token-file read it from a file or, with "-", from stdin instead.
_SECRET_FILES = (("secret_file", "secret"), ("slack_token_file", "slack_token"))
_SECRET_FILE_LIMIT = 64 * 1024  # far above any secret; /dev/zero must not fill the memory


def add_secret_option(p: argparse.ArgumentParser, name: str, help_text: str) -> None:
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
