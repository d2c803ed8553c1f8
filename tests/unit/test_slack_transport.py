"""SlackTransport without a network: what it makes of bodies it cannot turn into a message."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import aiohttp

from pgcourier.model import Job
from pgcourier.policy import Retry, decide
from pgcourier.slack import SlackTransport


def _job(payload: str) -> Job:
    return Job(
        delivery_id=1,
        event_id=uuid.uuid4(),
        endpoint_id=uuid.uuid4(),
        attempts=0,
        schedule_base=0,
        event_type="request_submitted",
        payload=payload,
        created_at=datetime.now(UTC),
        url="",
        secrets=(),
        kind="slack",
        slack_channel="#x",
    )


async def test_a_payload_nested_beyond_pythons_parser_is_a_failed_attempt() -> None:
    # Rows stored before enqueue capped the depth: json.loads raises RecursionError.
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    async with aiohttp.ClientSession() as session:
        # Port 9 on loopback: a request would fail differently (a connection error), so the
        # error below can only come from building the message.
        transport = SlackTransport(session, token="xoxb-1", api_url="http://127.0.0.1:9/api/")
        result = await transport.send(_job(deep))
    assert result.error == (
        "slack: the event's payload is nested too deeply to build a message from"
    )
    assert result.status is None
    # Not permanent: that would disable the endpoint for one bad event.
    assert result.permanent is None
    outcome = decide(
        status=result.status,
        error=result.error,
        attempts_in_schedule=1,
        schedule=[1.0],
        permanent=result.permanent,
    )
    assert isinstance(outcome, Retry)
