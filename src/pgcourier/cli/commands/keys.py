"""``pgcourier keys ...``: keys that encrypt endpoint secrets and Slack tokens at rest."""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from pgcourier.errors import ConfigurationError
from pgcourier.sealing import Keyring, generate_key
from pgcourier.secrets_at_rest import secure
from pgcourier.settings import Settings


def keys_generate(args: argparse.Namespace, settings: Settings) -> int:
    """Print a new key (no database needed)."""
    print(generate_key())
    return 0


async def keys_rotate(
    args: argparse.Namespace, conn: asyncpg.Connection, keyring: Keyring | None
) -> Any:
    if keyring is None:
        raise ConfigurationError(
            "PGCOURIER_SECRET_KEY is not set: set the new key first, then the old ones after "
            "it (new,old), and run this again"
        )
    done = await secure(conn, keyring, rotate=True)
    return {
        "values": done.values,
        "encrypted": done.encrypted,
        "reencrypted": done.reencrypted,
        "note": "every stored secret is under the first key: the other keys can be dropped",
    }
