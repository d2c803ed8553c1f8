"""Page sizes and opaque keyset cursors shared by the listings."""

from __future__ import annotations

import base64
import re
from datetime import datetime
from uuid import UUID

from pgcourier.errors import InvalidInput

MAX_PAGE = 1000


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")


MAX_ID = 2**63 - 1


def encode_cursor(created_at: datetime, event_id: str) -> str:
    """An opaque page cursor: the last event's (created_at, id)."""
    raw = f"{created_at.isoformat()}|{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, key = raw.partition("|")
        return datetime.fromisoformat(when), key
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not one this server issued", field="cursor") from exc


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The (created_at, id) in an events cursor, or :class:`InvalidInput` naming ``cursor``."""
    when, key = _decode(cursor)
    try:
        return when, UUID(key)
    except ValueError as exc:
        raise InvalidInput("cursor is not one this server issued", field="cursor") from exc


def decode_dead_cursor(cursor: str) -> tuple[datetime, int]:
    when, key = _decode(cursor)
    if not re.fullmatch(r"[0-9]{1,19}", key) or int(key) > MAX_ID:
        raise InvalidInput("cursor is not one this server issued", field="cursor")
    return when, int(key)
