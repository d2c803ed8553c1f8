"""The webhook body is built from the stored JSON text, identically on every attempt."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

from pgcourier.model import Job


def job(payload: str, created_at: datetime) -> Job:
    return Job(
        delivery_id=1,
        event_id=uuid.UUID(int=7),
        endpoint_id=uuid.uuid4(),
        attempts=0,
        schedule_base=0,
        event_type='odd"type',
        payload=payload,
        created_at=created_at,
        url="http://x",
        secrets=("whsec_x",),
    )


def test_body_wraps_the_payload_text_verbatim() -> None:
    stored = '{"b": 1, "a": [1.50, "ż"]}'
    j = job(stored, datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    body = j.body()
    assert body.endswith(b',"data":' + stored.encode() + b"}")
    parsed = json.loads(body)
    assert parsed == {
        "id": "00000000-0000-0000-0000-000000000007",
        "type": 'odd"type',
        "timestamp": "2026-01-02T03:04:05.000006Z",
        "data": {"b": 1, "a": [1.5, "ż"]},
    }
    assert j.body() == body


def test_timestamp_is_rendered_in_utc() -> None:
    j = job("{}", datetime(2026, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2))))
    assert json.loads(j.body())["timestamp"] == "2026-01-02T03:00:00.000000Z"
