"""What encrypted secrets cost the relay per delivery (issue 12, part 3): a micro benchmark.

Builds the relay's Job from a claimed row (as PgStore.claim does) and signs its body, with the
endpoint's secrets stored plain, stored encrypted and opened through the relay's cache, and
stored encrypted and decrypted on every delivery (what the cache avoids). No database: the row
is a dict shaped like the claim's result. Run: python scripts/unseal_cost.py
"""

from __future__ import annotations

import timeit
import uuid
from datetime import UTC, datetime
from typing import Any

from pgcourier.model import Job
from pgcourier.sealing import Keyring, Unsealer, generate_key
from pgcourier.signing import generate_secret, sign_headers
from pgcourier.store import _job

N = 20_000


def row(secrets: list[str]) -> dict[str, Any]:
    return {
        "id": 1,
        "event_id": uuid.uuid4(),
        "endpoint_id": uuid.uuid4(),
        "attempts": 0,
        "schedule_base": 0,
        "event_type": "order.paid",
        "payload": '{"order_id": 42, "total": 1899}',
        "created_at": datetime.now(UTC),
        "url": "https://example.com/hook",
        "secrets": secrets,
        "timeout_seconds": None,
        "headers": "{}",
        "signature_scheme": "standard",
        "permanent_statuses": [],
        "ordering_key": None,
        "troubled": False,
        "kind": "webhook",
        "slack_channel": None,
        "slack_token": None,
        "template": None,
    }


def per_delivery(build: Any) -> float:
    def once() -> None:
        job: Job = build()
        sign_headers(
            job.signature_scheme, job.secrets, str(job.event_id), job.event_type, job.body()
        )

    return min(timeit.repeat(once, number=N, repeat=5)) / N * 1e6


def main() -> None:
    secret = generate_secret()
    keyring = Keyring(generate_key())
    plain = row([secret])
    sealed = row([keyring.seal(secret)])
    cached = Unsealer(keyring)
    none = Unsealer(None)

    class NoCache(Unsealer):
        def open(self, stored: str) -> str:
            return keyring.open(stored)

    results = {
        "plain secret (no key)": per_delivery(lambda: _job(plain, none)),  # type: ignore[arg-type]
        "encrypted, opened once (cache)": per_delivery(lambda: _job(sealed, cached)),  # type: ignore[arg-type]
        "encrypted, decrypted every time": per_delivery(
            lambda: _job(sealed, NoCache(keyring))  # type: ignore[arg-type]
        ),
    }
    stored = sealed["secrets"][0]
    cached.open(stored)
    for name, call in (
        ("open alone, cache hit", lambda: cached.open(stored)),
        ("open alone, Fernet decrypt", lambda: keyring.open(stored)),
    ):
        us = min(timeit.repeat(call, number=N, repeat=5)) / N * 1e6
        print(f"{name:34} {us:7.3f} us")
    base = results["plain secret (no key)"]
    for name, us in results.items():
        print(f"{name:34} {us:7.2f} us per delivery (build job + sign)  {us - base:+6.2f} us")


if __name__ == "__main__":
    main()
