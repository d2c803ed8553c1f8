"""``pgcourier demo``: the whole path on one machine, in a throwaway embedded Postgres.

It starts a receiver on loopback that verifies every signature, registers it as an endpoint,
commits three events (and rolls a fourth back), runs a relay until everything is delivered, and
prints what the receiver saw. The receiver fails the first attempt of one event with a 503 so the
retry path shows too. Exit 0 only if every committed event arrived with a valid signature and the
rolled-back one never did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from pgcourier import ops, pools
from pgcourier.embedded import EmbeddedPostgres
from pgcourier.runtime import prepare_schema, running
from pgcourier.settings import Settings
from pgcourier.signing import WebhookVerificationError, verify

EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("order.paid", {"order_id": 42, "amount": "19.99", "currency": "EUR"}),
    ("request_submitted", {"title": "New laptop", "requester": "ada@example.com"}),
    ("order.shipped", {"order_id": 42, "carrier": "DHL"}),
]


class Receiver:
    """A webhook receiver that verifies signatures and records what arrived."""

    def __init__(self) -> None:
        self.secret = ""
        self.received: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = {}
        self.fail_first_of = "order.shipped"
        self.expected = 0
        self.all_arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        msg_id = request.headers.get("webhook-id", "?")
        self.attempts[msg_id] = self.attempts.get(msg_id, 0) + 1
        try:
            verify("standard", request.headers, body, self.secret)
            verified = True
        except WebhookVerificationError:
            verified = False
        event = json.loads(body)
        if event["type"] == self.fail_first_of and self.attempts[msg_id] == 1:
            return web.Response(status=503, text="try again later")
        self.received.append({"event": event, "verified": verified, "webhook_id": msg_id})
        if len(self.received) >= self.expected:
            self.all_arrived.set()
        return web.Response(status=204 if verified else 400)


async def run_demo(settings: Settings) -> int:
    with tempfile.TemporaryDirectory(prefix="pgcourier-demo-") as tmp:
        embedded = EmbeddedPostgres(Path(tmp))
        dsn = embedded.start()
        try:
            return await _demo(settings, dsn)
        finally:
            embedded.stop()


async def _demo(settings: Settings, dsn: str) -> int:
    settings = settings.model_copy(
        update={
            "retry_schedule": "1s,2s",
            "retry_jitter": 0.0,
            "poll_interval": 0.5,
            "admin_port": 0,  # never collide with a real relay's admin server
            # The demo's receiver is on loopback, which the SSRF guard refuses by default.
            "allow_networks": ",".join(filter(None, [settings.allow_networks, "127.0.0.0/8"])),
        }
    )
    await prepare_schema(dsn, settings)
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with pools.connection(dsn) as conn:
            endpoint = await ops.create_endpoint(
                conn,
                url=f"http://127.0.0.1:{port}/hook",
                event_types=["order.*", "request_submitted"],
                description="demo receiver",
                keyring=settings.keyring,
            )
            receiver.secret = endpoint["secret"]
            async with conn.transaction():
                ids = [str(await ops.enqueue(conn, t, p)) for t, p in EVENTS]
            tx = conn.transaction()
            await tx.start()
            rolled_back = str(await ops.enqueue(conn, "order.refunded", {"order_id": 42}))
            await tx.rollback()

        print(f"endpoint {endpoint['id']} -> {endpoint['url']}")
        print(f"committed {len(ids)} events, rolled back 1 (it must never arrive)\n")
        receiver.expected = len(ids)
        async with running(settings, dsn) as rt:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(receiver.all_arrived.wait(), timeout=30)
            rt.stop.set()  # the relay drains and writes its last completions before returning
    finally:
        await runner.cleanup()

    ok = True
    print(f"{'event type':<20} {'webhook-id':<38} {'attempts':>8}  signature")
    for item in receiver.received:
        event, msg_id = item["event"], item["webhook_id"]
        print(
            f"{event['type']:<20} {msg_id:<38} {receiver.attempts[msg_id]:>8}  "
            f"{'verified' if item['verified'] else 'INVALID'}"
        )
        ok = ok and item["verified"]
    got = {item["webhook_id"] for item in receiver.received}
    if got != set(ids):
        print(f"\nmissing: {sorted(set(ids) - got)}")
        ok = False
    if rolled_back in receiver.attempts:
        print("\nthe rolled-back event was delivered: this is a bug")
        ok = False
    print("\ndemo " + ("passed: every committed event delivered and verified" if ok else "FAILED"))
    return 0 if ok else 1
