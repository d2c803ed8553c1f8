"""``pgcourier event-types ...`` as a user runs it (a real process, real Postgres), and the docs."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from pgcourier import ops
from tests.integration.test_cli import pgcourier

SCHEMA = {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}


def write(tmp_path: Path, name: str, value: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(value) if not isinstance(value, str) else value)
    return str(path)


async def test_crud(dsn: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
    schema = write(tmp_path, "schema.json", SCHEMA)
    example = write(tmp_path, "example.json", {"amount": 5})
    code, out, err = await pgcourier(
        "event-types", "add", "invoice.paid", "--description", "An invoice was paid.",
        "--schema", schema, "--example", example, dsn=dsn,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["schema"] == SCHEMA
    code, out, _ = await pgcourier("event-types", "list", dsn=dsn)
    assert [t["name"] for t in json.loads(out)["data"]] == ["invoice.paid"]
    code, out, _ = await pgcourier("event-types", "list", dsn=dsn, text=True)
    assert "invoice.paid" in out
    assert "An invoice was paid." in out
    code, out, _ = await pgcourier(
        "event-types", "update", "invoice.paid", "--no-example", "--description", "Paid.", dsn=dsn
    )
    assert (code, json.loads(out)["example"], json.loads(out)["description"]) == (0, None, "Paid.")
    code, out, _ = await pgcourier("event-types", "show", "invoice.paid", dsn=dsn)
    assert json.loads(out)["schema"] == SCHEMA

    # POST /events' check applies to `pgcourier enqueue` too.
    code, _, err = await pgcourier("enqueue", "invoice.paid", '{"amount": "5"}', dsn=dsn)
    assert code == 1
    assert err.count("\n") == 1
    assert "payload.amount" in err
    code, _, _ = await pgcourier("enqueue", "invoice.paid", '{"amount": 5}', dsn=dsn)
    assert code == 0

    code, out, _ = await pgcourier("event-types", "delete", "invoice.paid", dsn=dsn)
    assert (code, json.loads(out)) == (0, {"deleted": "invoice.paid", "strict": False})
    assert await ops.list_event_types(conn) == []


async def test_bad_input_is_one_line_and_non_zero(dsn: str, tmp_path: Path) -> None:
    good = write(tmp_path, "schema.json", SCHEMA)
    cases = [
        (("add", "bad name"), 1, "'bad name' is not an event type"),
        (("add", "a.b", "--schema", write(tmp_path, "broken.json", "{nope")), 2, "is not JSON"),
        (("add", "a.b", "--schema", str(tmp_path / "missing.json")), 2, "cannot read"),
        (("add", "a.b", "--schema", write(tmp_path, "s.json", {"type": 5})), 1, "schema.type"),
        (
            ("add", "a.b", "--schema", good, "--example", write(tmp_path, "e.json", {})),
            1,
            "example.amount",
        ),
        (("add", "a.b", "--example", write(tmp_path, "l.json", [1])), 1, "JSON object"),
        (("show", "a.b"), 1, "no event type a.b"),
        (("delete", "a.b"), 1, "no event type a.b"),
        (("update", "a.b", "--description", "x"), 1, "no event type a.b"),
        (("update", "a.b", "--schema", good, "--no-schema"), 2, "not allowed with"),
    ]
    for args, expected, words in cases:
        code, out, err = await pgcourier("event-types", *args, dsn=dsn)
        assert code == expected, (args, err)
        assert out == ""
        assert err.count("\n") == 1, err
        assert words in err, (args, err)
    code, _, _ = await pgcourier("event-types", "add", "a.b", dsn=dsn)
    assert code == 0
    code, _, err = await pgcourier("event-types", "add", "a.b", dsn=dsn)
    assert (code, err.count("\n")) == (1, 1)
    assert "already registered" in err
    code, _, err = await pgcourier("event-types", "update", "a.b", dsn=dsn)
    assert code == 1
    assert "at least one field" in err


async def test_migrate_applies_strict_mode(dsn: str, conn: asyncpg.Connection) -> None:
    code, _, err = await pgcourier("migrate", dsn=dsn, PGCOURIER_EVENT_TYPES="strict")
    assert code == 0, err
    code, _, err = await pgcourier("enqueue", "x.y", "{}", dsn=dsn)
    assert code == 1
    assert "event_type 'x.y' is not registered" in err
    code, _, err = await pgcourier("migrate", dsn=dsn, PGCOURIER_EVENT_TYPES="loose")
    assert code == 2
    assert "PGCOURIER_EVENT_TYPES" in err
    code, _, _ = await pgcourier("migrate", dsn=dsn)
    assert code == 0
    assert await ops.event_types_strict(conn) is False


async def test_docs(dsn: str, tmp_path: Path, conn: asyncpg.Connection) -> None:
    await ops.create_event_type(
        conn,
        "invoice.paid",
        description="An invoice was paid in full.",
        schema=SCHEMA,
        example={"amount": 12.5},
    )
    await ops.create_event_type(conn, "user.deleted")
    target = tmp_path / "EVENTS.md"
    code, _out, err = await pgcourier("event-types", "docs", "--output", str(target), dsn=dsn)
    assert code == 0, err
    text = target.read_text()
    code, stdout_text, _ = await pgcourier("event-types", "docs", dsn=dsn, text=True)
    assert stdout_text == text
    assert text.index("### `invoice.paid`") < text.index("### `user.deleted`")
    assert "An invoice was paid in full." in text
    assert json.dumps(SCHEMA, indent=2) in text
    assert '"amount": 12.5' in text
    assert '"type": "invoice.paid"' in text
    assert "No schema is registered for this type's payload." in text
    for scheme in ("standard", "github", "timestamped-hex", "stripe-style"):
        assert f"### `{scheme}`" in text
    assert "pgcourier verify" in text
