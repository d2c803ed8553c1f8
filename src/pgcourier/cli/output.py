"""What the command prints: JSON for scripts, tables and ``key: value`` lines for people.

Text output shows control characters escaped (``\\x1b``): response bodies and errors come from
receivers, and raw escape sequences would reach the operator's terminal (clear it, retitle it,
hide lines). JSON output is escaped by ``json.dumps`` already.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any


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


def output(args: argparse.Namespace, value: Any) -> None:
    """Print a command's result: JSON with ``--json``, text otherwise."""
    if getattr(args, "json", False):
        _print_json(value)
    else:
        print(render_text(value))


def error_line(exc: Exception) -> str:
    """The one line a failure prints: whitespace folded, control characters escaped (messages
    can quote a database's or a receiver's text)."""
    return f"pgcourier: error: {printable(' '.join(str(exc).split()))}"
