"""No request may produce a 500: arbitrary bodies and query strings against the real app.

test_api_schemathesis.py generates requests from the OpenAPI document; this file adds what a
document-driven generator does not send: raw bytes, bodies of the wrong shape, and arbitrary ids
and query strings. Every answer is < 500, and errors have the one documented shape.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgcourier.admin import create_app
from pgcourier.admin.context import AdminContext
from pgcourier.metrics import Metrics

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
# Bodies shaped like the real ones often enough to get past the first field.
endpoint_like = st.fixed_dictionaries(
    {},
    optional={
        "url": st.one_of(st.text(max_size=40), st.just("https://example.com/h"), json_values),
        "event_types": st.one_of(st.lists(st.text(max_size=10), max_size=3), json_values),
        "description": json_values,
        "secret": st.one_of(st.text(max_size=50), json_values),
        "enabled": json_values,
    },
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "event_type": st.one_of(st.text(max_size=30), st.just("order.paid"), json_values),
        "payload": json_values,
        "ordering_key": json_values,
        "idempotency_key": json_values,
    },
)
query_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="&#"), max_size=30
)


@pytest.fixture
async def client(aiohttp_client: Any, dsn: str) -> AsyncIterator[Any]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        yield await aiohttp_client(create_app(AdminContext(pool, Metrics())))
    finally:
        await pool.close()


async def assert_clean(response: Any) -> None:
    assert response.status < 500, await response.text()
    if response.status >= 400:
        error = (await response.json())["error"]
        assert set(error) == {"code", "message", "field"}


FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(body=st.one_of(endpoint_like, json_values))
async def test_post_endpoints_never_500(client, body) -> None:
    await assert_clean(await client.post("/api/v1/endpoints", json=body))


@FUZZ
@given(body=st.one_of(event_like, json_values))
async def test_post_events_never_500(client, body) -> None:
    await assert_clean(await client.post("/api/v1/events", json=body))


@FUZZ
@given(raw=st.binary(max_size=60))
async def test_raw_bytes_never_500(client, raw) -> None:
    headers = {"Content-Type": "application/json"}
    for path in ("/api/v1/events", "/api/v1/endpoints", "/api/v1/dead-letters/replay"):
        await assert_clean(await client.post(path, data=raw, headers=headers))


@FUZZ
@given(
    params=st.dictionaries(
        st.sampled_from(["type", "since", "until", "limit", "cursor"]), query_values
    ),
    ident=query_values,
)
async def test_queries_and_ids_never_500(client, params, ident) -> None:
    await assert_clean(await client.get("/api/v1/events", params=params))
    await assert_clean(await client.get("/api/v1/dead-letters", params=params))
    for path in (f"/api/v1/events/{ident}", f"/api/v1/endpoints/{ident}"):
        await assert_clean(await client.get(path))
    await assert_clean(
        await client.patch(
            "/api/v1/endpoints/" + ident,
            data=json.dumps({"enabled": True}),
            headers={"Content-Type": "application/json"},
        )
    )


header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
) | st.sampled_from(["", "[", "[::1", "http://[::1", "null", "localhost:", "127.0.0.1:x"])


@FUZZ
@given(host=header_values, origin=header_values, content_type=header_values, auth=header_values)
async def test_arbitrary_guard_headers_never_500(client, host, origin, content_type, auth) -> None:
    # The headers the Host/Origin, content-type and token checks parse, with any value.
    headers = {"Host": host, "Origin": origin, "Content-Type": content_type, "Authorization": auth}
    response = await client.post("/api/v1/events", data=b"{}", headers=headers)
    await assert_clean(response)
    assert response.status != 201  # never a write: an empty event_type is refused
    await assert_clean(await client.get("/metrics", headers=headers))
