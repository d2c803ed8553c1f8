"""No console page answers 500: arbitrary query strings, ids and form fields (with a valid CSRF
token, so that the fuzz reaches the handlers) against the real app on a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgcourier import ops
from pgcourier.admin import create_app
from pgcourier.admin.context import AdminContext
from pgcourier.admin.ui.auth import SESSION_COOKIE, Signer
from pgcourier.metrics import Metrics
from tests.integration.console_helpers import login
from tests.integration.helpers import TOKEN

text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
# Values shaped like the real ones often enough to get past the first check.
values = st.one_of(
    st.sampled_from(
        [
            "",
            "1h",
            "2026-01-01T00:00Z",
            "2026-01-01T00:00",
            "replay",
            "discard",
            "matching",
            "00000000-0000-0000-0000-000000000000",
            "0",
            "1",
            "99999999999999999999",
            "9223372036854775808",
            "-1",
            "MjAy",
        ]
    ),
    text,
)
QUERY_KEYS = [
    "type",
    "since",
    "until",
    "id",
    "cursor",
    "window",
    "endpoint_id",
    "event_type",
    "action",
    "scope",
    "tenant",
]
FORM_KEYS = [
    "since",
    "reason",
    "grace_period_seconds",
    "id",
    "scope",
    "endpoint_id",
    "event_type",
    "until",
    "next",
    "tenant",
    "wait_seconds",
]
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
async def setup(aiohttp_client: Any, dsn: str) -> AsyncIterator[tuple[Any, str, str]]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            endpoint = await ops.create_endpoint(
                conn, url="https://example.com/hook", event_types=["*"]
            )
            await ops.enqueue(conn, "order.paid", {"n": 1})
            # Test sends go to a disabled endpoint: the operation then answers at once (the
            # event is held) instead of waiting for a relay this test does not run.
            held = await ops.create_endpoint(
                conn, url="https://example.com/held", event_types=["*"], enabled=False
            )
        client = await aiohttp_client(create_app(AdminContext(pool, Metrics(), None, TOKEN)))
        await login(client)
        yield client, endpoint["id"], held["id"]
    finally:
        await pool.close()


def csrf(client: Any, path: str) -> str:
    signer = Signer.for_token(TOKEN)
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/ui/"))[SESSION_COOKIE]
    session = signer.verify(cookie.value)
    assert session is not None
    return signer.csrf(session, path)


async def assert_clean(response: Any) -> None:
    assert response.status < 500, await response.text()
    if response.status >= 400:
        assert response.content_type in ("text/html", "application/json")


@FUZZ
@given(params=st.dictionaries(st.sampled_from(QUERY_KEYS), values, max_size=5), ident=values)
async def test_pages_never_500(setup: Any, params: Any, ident: Any) -> None:
    client, eid, _ = setup
    for path in (
        "/ui/",
        "/ui/endpoints",
        f"/ui/endpoints/{eid}",
        "/ui/events",
        "/ui/dead-letters",
        "/ui/dead-letters/confirm",
        "/ui/login",
    ):
        await assert_clean(await client.get(path, params=params))
    for path in (f"/ui/endpoints/{ident}", f"/ui/events/{ident}"):
        await assert_clean(await client.get(path.replace("?", "%3F").replace("#", "%23")))


@FUZZ
@given(
    fields=st.fixed_dictionaries({}, optional=dict.fromkeys(FORM_KEYS, values)),
    action=st.sampled_from(["enable", "disable", "rotate", "recover", "replay", "discard", "test"]),
)
async def test_forms_never_500(setup: Any, fields: Any, action: Any) -> None:
    client, eid, held = setup
    if action in ("replay", "discard"):
        path = f"/ui/dead-letters/{action}"
    elif action == "test":
        path = f"/ui/endpoints/{held}/test"
    else:
        path = f"/ui/endpoints/{eid}/{action}"
    data = {**fields, "csrf_token": csrf(client, path)}
    await assert_clean(await client.post(path, data=data, allow_redirects=False))
    # The login form too, with anything as the token.
    await assert_clean(
        await client.post(
            "/ui/login", data={"token": fields.get("reason", "")}, allow_redirects=False
        )
    )
    await login(client)
