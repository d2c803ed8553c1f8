"""The "Send a test event" form of an endpoint's page: the API's test send (ops.send_test),
its result shown on a page.

The request waits for the relay's first attempt (the endpoint's timeout plus a few seconds at
most, or the wait the form asks for), like ``POST /api/v1/endpoints/{id}/test``: a connection is
taken for each step and given back in between, never held while waiting, because in
``pgcourier run`` the console shares the relay's small pool with the relay that is to make the
attempt.
"""

from __future__ import annotations

import re

from aiohttp import web

from pgcourier import ops
from pgcourier.admin.ui.render import connection, first, form, render
from pgcourier.errors import InvalidInput

# Seconds as an operator types them: "5", "0.5"; ASCII digits only (float() would also take
# "١٢", "nan" and "1e3"). The range is the operation's (ops.send_test checks it).
WAIT = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3})?")


def wait_seconds(text: str | None) -> float | None:
    """The form's wait, None when blank (the operation's default), or :class:`InvalidInput`."""
    if text is None:
        return None
    if not WAIT.fullmatch(text):
        raise InvalidInput(
            f"wait_seconds {text!r} is not a number of seconds, e.g. 5 or 0.5",
            field="wait_seconds",
        )
    return float(text)


async def send(request: web.Request) -> web.StreamResponse:
    endpoint_id = request.match_info["id"]
    fields = await form(request)
    event_type = first(fields, "event_type")
    wait = wait_seconds(first(fields, "wait_seconds"))
    # The operation validates the id, the type and the wait, as it does for the API and the CLI.
    sent = await ops.send_test(
        lambda: connection(request),  # one per step: no connection is held while waiting
        endpoint_id,
        event_type=event_type,
        wait_seconds=wait,
    )
    async with connection(request) as conn:
        endpoint = await ops.get_endpoint(conn, endpoint_id)
    return render(
        request,
        "test_sent.html",
        {"endpoint": endpoint, "sent": sent, "event_type": event_type or ""},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/endpoints/{id}/test", send)
