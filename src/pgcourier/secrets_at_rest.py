"""Stored secrets brought in line with the configured keys: at start-up and by ``pgcourier keys``.

:func:`secure` runs in one transaction under an advisory lock, so several relays starting at
once encrypt each value once (the later ones wait, then find nothing to do), and no endpoint
change lands between reading a value and writing it back (the rows are locked too).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import structlog

from pgcourier.db import QUERIES, translate_errors
from pgcourier.sealing import GENERATE_HINT, Keyring, SecretUnavailable, is_sealed

log = structlog.get_logger("pgcourier.secrets")

UNENCRYPTED_WARNING = (
    "PGCOURIER_SECRET_KEY is not set: endpoint secrets and Slack tokens are stored unencrypted "
    f"(anyone who can read the database or a backup can forge webhooks); make a key with "
    f"`{GENERATE_HINT}`"
)


@dataclass(frozen=True, slots=True)
class Secured:
    """What a pass did: values stored in all, plain ones encrypted, sealed ones re-encrypted."""

    values: int
    encrypted: int
    reencrypted: int


async def secure(
    conn: asyncpg.Connection, keyring: Keyring | None, *, rotate: bool = False
) -> Secured:
    """Check every stored secret against the keys, and encrypt plain ones when there is a key.

    Without a key, a stored encrypted value is a :class:`SecretUnavailable` (the relay could
    only sign with garbage). With keys, every encrypted value must open with one of them;
    ``rotate`` also re-encrypts the values not under the first key, after which the other keys
    can be dropped.
    """
    values = encrypted = reencrypted = 0
    with translate_errors():
        if not await conn.fetchval(QUERIES["secrets_table_exists"]):
            return Secured(values=0, encrypted=0, reencrypted=0)  # no schema, nothing stored
        async with conn.transaction():
            await conn.execute(QUERIES["lock_stored_secrets"])
            rows = await conn.fetch(QUERIES["stored_secrets"])
            changed: list[tuple[object, ...]] = []
            for row in rows:
                stored = (row["secret"], row["previous_secret"], row["slack_token"])
                present = [v for v in stored if v is not None]
                values += len(present)
                if keyring is None:
                    if any(is_sealed(v) for v in present):
                        raise SecretUnavailable(
                            f"endpoint {row['id']}'s secrets are stored encrypted but "
                            "PGCOURIER_SECRET_KEY is not set: set the key they were encrypted with"
                        )
                    continue
                new = tuple(_bring(keyring, v, row["id"], rotate) for v in stored)
                for old, value in zip(stored, new, strict=True):
                    if old is not None and old != value:
                        if is_sealed(old):
                            reencrypted += 1
                        else:
                            encrypted += 1
                if new != stored:
                    changed.append((row["id"], *new))
            if changed:
                await conn.execute(
                    QUERIES["write_stored_secrets"],
                    *(list(column) for column in zip(*changed, strict=True)),
                )
    if encrypted or reencrypted:
        log.info("stored secrets encrypted", encrypted=encrypted, reencrypted=reencrypted)
    return Secured(values=values, encrypted=encrypted, reencrypted=reencrypted)


def _bring(keyring: Keyring, value: str | None, endpoint_id: object, rotate: bool) -> str | None:
    if value is None:
        return None
    if not is_sealed(value):
        return keyring.seal(value)
    check_opens(keyring, value, endpoint_id)  # never start a relay that would sign with garbage
    return keyring.reseal(value) if rotate else value


def check_opens(keyring: Keyring, stored: str, endpoint_id: object) -> None:
    """A stored sealed value opens with ``keyring``, else :class:`SecretUnavailable`.

    The one check of a key against what is stored: at start-up (:func:`secure`, every value)
    and before any write (:func:`seal_for_writing`, one value).
    """
    try:
        keyring.open(stored)
    except SecretUnavailable:
        raise SecretUnavailable(
            f"no key in PGCOURIER_SECRET_KEY decrypts endpoint {endpoint_id}'s secrets: "
            "this PGCOURIER_SECRET_KEY does not open the stored secrets; set the key they were "
            "encrypted with (the first key encrypts, every key decrypts)"
        ) from None


async def secure_at_start(conn: asyncpg.Connection, keyring: Keyring | None) -> None:
    """What a relay or admin server does at start: :func:`secure`, and one warning without a
    key."""
    await secure(conn, keyring)
    if keyring is None:
        log.warning(UNENCRYPTED_WARNING)


async def seal_for_writing(conn: asyncpg.Connection, keyring: Keyring | None, value: str) -> str:
    """``value`` as it is to be stored: encrypted under the first key, or plain without keys.

    A writer checks its keys against what is stored before it writes, and refuses
    (:class:`SecretUnavailable`, nothing written) when they do not fit:

    * with keys, they must open a stored sealed value (the most recently changed endpoint's):
      a value sealed under a key no other process has would leave every relay unable to sign
      for that endpoint. Keys that share one key with the stored values pass, so a rolling
      deploy that puts a new first key before the old one (new,old) can write.
    * without keys, there must be no sealed value: a plain one beside them would sit in the
      database and its backups until the next start with a key encrypted it.
    """
    with translate_errors():
        row = await conn.fetchrow(QUERIES["latest_sealed_secret"])
    if keyring is not None:
        if row is not None:
            check_opens(keyring, row["stored"], row["id"])
        return keyring.seal(value)
    if row is not None:
        raise SecretUnavailable(
            "endpoint secrets in this database are stored encrypted: set PGCOURIER_SECRET_KEY "
            "to write new ones"
        )
    return value
