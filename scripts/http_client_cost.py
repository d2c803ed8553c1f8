"""CPU per webhook request with each HTTP client (issue 11): a micro benchmark.

A local aiohttp receiver runs in another process (so its CPU is not counted); this process sends
N signed POSTs of a ~300-byte envelope, 64 in flight, on uvloop, through:

* ``aiohttp session``: ``session.post`` on the session ``new_session`` builds (the SSRF socket
  factory, DNS cache, limits), reading the body as the transport does;
* ``aiohttp transport``: ``WebhookTransport.send``, the relay's aiohttp path (signing included);
* ``reqwest client``: a bare pyreqwest request on the transport's pinned client;
* ``reqwest transport``: ``ReqwestTransport.send``, the relay's reqwest path (signing included).

CPU is this process's (``time.process_time``: every thread, pyreqwest's Tokio thread included)
divided by N. The URL names ``localhost``, so the name lookup and the SSRF check are on the
path as in production (once per DNS TTL). Run: python scripts/http_client_cost.py [N]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import uvloop
from aiohttp import web

from pgcourier.delivery import WebhookTransport, new_session
from pgcourier.delivery_reqwest import PinnedClients, ReqwestTransport
from pgcourier.model import Job
from pgcourier.netguard import parse_networks

IN_FLIGHT = 64
ROUNDS = 2
WARM_UP = 1000
LOOPBACK = parse_networks("127.0.0.0/8, ::1/128")
PAYLOAD = '{"order_id": 42, "customer": "cus_4fQ2", "total": 1899, "currency": "EUR", ' + (
    '"items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}], "note": "gift wrap"}'
)


def serve(sock: socket.socket) -> None:
    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        await asyncio.Event().wait()

    uvloop.run(main())


def job(url: str) -> Job:
    return Job(
        delivery_id=1,
        event_id=uuid.uuid4(),
        endpoint_id=uuid.uuid4(),
        attempts=0,
        schedule_base=0,
        event_type="order.paid",
        payload=PAYLOAD,
        created_at=dt.datetime.now(dt.UTC),
        url=url,
        secrets=("whsec_dGVzdHNlY3JldHRlc3RzZWNyZXQ=",),
    )


async def measure(send: Callable[[], Awaitable[None]], n: int) -> tuple[float, float]:
    """(µs of CPU per request, requests per second) for n sends, IN_FLIGHT at a time."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await send()

    async def run(total: int) -> None:
        share, extra = divmod(total, IN_FLIGHT)
        await asyncio.gather(*(worker(share + (i < extra)) for i in range(IN_FLIGHT)))

    await run(WARM_UP)
    cpu, wall = time.process_time(), time.perf_counter()
    await run(n)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / n * 1e6, n / wall


async def main(n: int, port: int) -> None:
    url = f"http://localhost:{port}/hook"
    the_job = job(url)
    body = the_job.body()
    session = new_session(max_in_flight=IN_FLIGHT, allowed_networks=LOOPBACK)
    clients = PinnedClients(max_in_flight=IN_FLIGHT, allowed_networks=LOOPBACK)
    aiohttp_transport = WebhookTransport(session, timeout=10.0, response_body_limit=4096)
    reqwest_transport = ReqwestTransport(clients, timeout=10.0, response_body_limit=4096)
    client = await clients.client_for(url)
    headers = {"content-type": "application/json"}

    async def aiohttp_session() -> None:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as r:
            await r.content.read(4096)
            assert r.status == 200

    async def aiohttp_send() -> None:
        assert (await aiohttp_transport.send(the_job)).status == 200

    async def reqwest_client() -> None:
        request = client.post(url).headers(headers).body_bytes(body)
        async with request.streamed_read_buffer_limit(0).build_streamed() as r:
            while await r.body_reader.read_chunk() is not None:
                pass
            assert r.status == 200

    async def reqwest_send() -> None:
        assert (await reqwest_transport.send(the_job)).status == 200

    variants = {
        "aiohttp session": aiohttp_session,
        "aiohttp transport": aiohttp_send,
        "reqwest client": reqwest_client,
        "reqwest transport": reqwest_send,
    }
    print(f"N={n} POSTs of {len(body)} B, {IN_FLIGHT} in flight, uvloop, {ROUNDS} rounds")
    print(f"{'':20} {'µs CPU/request':>15} {'requests/s':>12}")
    try:
        for round_ in range(ROUNDS):
            for name, send in variants.items():
                cpu, rate = await measure(send, n)
                print(f"{name:20} {cpu:15.0f} {rate:12.0f}   (round {round_ + 1})", flush=True)
    finally:
        await session.close()
        await clients.close()


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    receiver = multiprocessing.get_context("spawn").Process(
        target=serve, args=(listener,), daemon=True
    )
    receiver.start()
    try:
        time.sleep(1.0)  # the receiver's app is up before the first request
        uvloop.run(main(count, listener.getsockname()[1]))
    finally:
        receiver.terminate()
        receiver.join()
