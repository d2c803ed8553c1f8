"""For receivers: verify pgcourier's webhooks in an aiohttp app with one decorator.

::

    from aiohttp import web
    from pgcourier.receiver import verified

    @verified("standard", secrets=["whsec_..."])
    async def hook(request: web.Request) -> web.Response:
        event = await request.json()   # only reached when the signature is genuine
        ...
        return web.Response(status=204)

A request whose signature is missing, wrong or stale gets ``401`` with a JSON body saying why,
and the handler is not called. The body is read once and verified byte for byte; aiohttp keeps
it, so the handler can read it again. Pass several secrets while you rotate your own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import wraps

from aiohttp import web

from pgcourier.signing import DEFAULT_TOLERANCE, SCHEMES, WebhookVerificationError, verify

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def verified(
    scheme: str, secrets: str | Sequence[str], *, tolerance: int = DEFAULT_TOLERANCE
) -> Callable[[Handler], Handler]:
    """Decorate an aiohttp handler so that it only sees genuinely signed webhooks."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown signature scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    secret_list = [secrets] if isinstance(secrets, str) else list(secrets)
    if not secret_list:
        raise ValueError("at least one secret is needed")

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            try:
                verify(scheme, request.headers, body, secret_list, tolerance)
            except WebhookVerificationError as exc:
                return web.json_response({"error": f"signature rejected: {exc}"}, status=401)
            return await handler(request)

        return checked

    return decorate
