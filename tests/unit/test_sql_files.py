"""The named-query loader and the migration files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pgcourier.db import MIGRATIONS, QUERIES, parse_queries

SRC = Path(__file__).parents[2] / "src" / "pgcourier"


def test_parse_queries_splits_named_blocks_and_keeps_doc_comments() -> None:
    queries = parse_queries("-- header\n-- one --\n-- doc\nSELECT 1;\n\n-- two --\nSELECT 2;\n")
    assert dict(queries) == {"one": "-- doc\nSELECT 1;", "two": "SELECT 2;"}


def test_duplicate_and_empty_blocks_are_errors() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- a --\nSELECT 1;\n-- a --\nSELECT 2;\n")
    with pytest.raises(ValueError, match="empty"):
        parse_queries("-- a --\n\n-- b --\nSELECT 1;\n")


def test_a_missing_query_name_says_which() -> None:
    with pytest.raises(KeyError, match="no query named 'nope'"):
        QUERIES["nope"]


def test_every_query_the_code_names_exists() -> None:
    used = set()
    for path in SRC.rglob("*.py"):
        used |= set(re.findall(r'QUERIES\["([a-z_0-9]+)"\]', path.read_text()))
    assert used, "the scan found no query names"
    assert used <= set(QUERIES), f"unknown queries: {used - set(QUERIES)}"


def test_every_query_is_used() -> None:
    text = "".join(p.read_text() for p in SRC.rglob("*.py"))
    unused = [name for name in QUERIES if f'"{name}"' not in text]
    assert unused == []


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert all(m.checksum and len(m.checksum) == 64 for m in MIGRATIONS)
