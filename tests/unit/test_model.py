"""The webhook body is built from the stored JSON text, identically on every attempt."""

from __future__ import annotations

import dataclasses
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


def test_every_attempt_and_every_endpoint_get_the_same_bytes() -> None:
    # The body is the event's, not the delivery's: a retry (attempts 4, after a replay), another
    # endpoint with its own scheme, secrets and headers, all sign and send the same bytes.
    created = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    first = job('{"n": 1}', created)
    later = dataclasses.replace(
        first,
        delivery_id=99,
        endpoint_id=uuid.uuid4(),
        attempts=4,
        schedule_base=3,
        url="http://y",
        secrets=("whsec_y", "whsec_x"),
        headers={"X-Other": "1"},
        signature_scheme="github",
        ordering_key="k",
    )
    assert later.body() == first.body()
    # ...while a different event (id, type, time or payload) gets different bytes.
    for change in (
        {"event_id": uuid.UUID(int=8)},
        {"event_type": "other"},
        {"created_at": created + timedelta(microseconds=1)},
        {"payload": '{"n": 2}'},
    ):
        assert dataclasses.replace(first, **change).body() != first.body(), change


def test_timestamp_is_rendered_in_utc() -> None:
    j = job("{}", datetime(2026, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2))))
    assert json.loads(j.body())["timestamp"] == "2026-01-02T03:00:00.000000Z"


def test_secrets_and_header_values_stay_out_of_a_jobs_repr() -> None:
    job = Job(
        delivery_id=1,
        event_id=uuid.uuid4(),
        endpoint_id=uuid.uuid4(),
        attempts=0,
        schedule_base=0,
        event_type="a.b",
        payload="{}",
        created_at=datetime.now(UTC),
        url="https://example.com/hook",
        secrets=("whsec_c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1zaG93LXVw",),
        headers={"Authorization": "Bearer receiver-credential"},
        slack_token="xoxb-never-shown-1234",
    )
    text = repr(job)
    for secret in ("whsec_c2Vj", "receiver-credential", "xoxb-never"):
        assert secret not in text
    assert "https://example.com/hook" in text  # the rest is still there to debug with
