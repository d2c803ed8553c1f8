"""Event ids are time-ordered UUIDs, version 7 (migration 0015), on every Postgres version.

Random ids (version 4) spread every index keyed by an event id over its whole key space, and the
queue's (event_id, endpoint_id) index, whose rows live for milliseconds, then grew without end
(issue 12's soak). Ids that grow with time keep those indexes bounded.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from pgcourier import ops


def _millis(event_id: uuid.UUID) -> int:
    """The Unix time in milliseconds that a version 7 UUID starts with."""
    return event_id.int >> 80


async def test_enqueue_and_insert_make_version_7_ids_in_time_order(
    conn: asyncpg.Connection,
) -> None:
    ids = [await ops.enqueue(conn, "a.b", {"n": n}) for n in range(50)]
    for n in range(50, 100):
        ids.append(
            await conn.fetchval(
                "INSERT INTO courier.outbox (event_type, payload) VALUES ('a.b', $1::jsonb)"
                " RETURNING id",
                f'{{"n": {n}}}',
            )
        )
    assert {i.version for i in ids} == {7}
    assert {i.variant for i in ids} == {uuid.RFC_4122}
    # One session's ids come out in order (the sub-millisecond bits, RFC 9562 method 3).
    assert ids == sorted(ids)
    rows = await conn.fetch("SELECT id, created_at FROM courier.outbox")
    for row in rows:
        stamped = datetime.fromtimestamp(_millis(row["id"]) / 1000, UTC)
        assert abs((row["created_at"] - stamped).total_seconds()) < 1.0


async def test_our_own_uuidv7_is_a_version_7_uuid_of_now(conn: asyncpg.Connection) -> None:
    """courier.uuidv7() is the default before Postgres 18: checked on every version."""
    rows = await conn.fetch(
        "SELECT courier.uuidv7() AS id, clock_timestamp() AS at FROM generate_series(1, 2000)"
    )
    ids = [r["id"] for r in rows]
    assert {i.version for i in ids} == {7}
    assert {i.variant for i in ids} == {uuid.RFC_4122}
    assert len(set(ids)) == len(ids)
    # Time-ordered to the microsecond (its 12 bits after the version); ids made within the
    # same microsecond differ only in their random bits, in no particular order.
    stamps = [i.int >> 64 for i in ids]
    assert stamps == sorted(stamps)
    for row in rows[::100]:
        # Stamped before clock_timestamp() in the same row: by then, or a moment later when
        # the backend lost its core in between (CI runs tests on two busy cores).
        late = row["at"].timestamp() * 1000 - _millis(row["id"])
        assert 0 <= late < 100
    # The 62 bits after the variant are random: not the same in any two ids.
    assert len({i.int & ((1 << 62) - 1) for i in ids}) == len(ids)


async def test_the_default_is_postgres_own_uuidv7_where_there_is_one(
    conn: asyncpg.Connection,
) -> None:
    default = await conn.fetchval(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef AS d"
        " JOIN pg_attribute AS a ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
        " WHERE d.adrelid = 'courier.outbox'::regclass AND a.attname = 'id'"
    )
    version = await conn.fetchval("SELECT current_setting('server_version_num')::int")
    assert default == ("uuidv7()" if version >= 180000 else "courier.uuidv7()")
