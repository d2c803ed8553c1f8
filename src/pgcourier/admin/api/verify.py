"""``/api/v1/verify``: does a received webhook verify, and if not, exactly why.

For people building a receiver: paste the headers and body their code received and the secret it
uses, and learn which header is missing, how far the timestamp is off, or that the signature does
not match. Pure (no database); the answer is :func:`pgcourier.signing.check`'s. The secret is
never logged nor echoed back.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, Field

from pgcourier import signing
from pgcourier.admin.api.fields import STRICT, Scheme, whole
from pgcourier.admin.api.requests import read_body
from pgcourier.admin.api.routing import Route

# A year: enough to re-check a message captured long ago (its timestamp is still checked).
MAX_TOLERANCE = 366 * 86400


class VerifyRequest(BaseModel):
    """POST /api/v1/verify"""

    model_config = STRICT

    scheme: Scheme
    secret: Annotated[
        str, Field(min_length=1, max_length=1000, json_schema_extra={"writeOnly": True})
    ] = Field(description="the secret the receiver verifies with (its format is checked too)")
    # Any name: the tool reports what it finds, and only the scheme's own headers are read.
    headers: dict[Annotated[str, Field(max_length=200)], Annotated[str, Field(max_length=8192)]] = (
        Field(default_factory=dict, max_length=100, description="the headers received, by name")
    )
    body: str = Field(description="the exact body received, as text (encoded as UTF-8)")
    tolerance_seconds: Annotated[int, Field(ge=0, le=MAX_TOLERANCE), BeforeValidator(whole)] = (
        Field(
            default=signing.DEFAULT_TOLERANCE,
            description="how far the signed timestamp may be from now",
        )
    )


async def verify_message(request: web.Request) -> web.Response:
    body = await read_body(request, VerifyRequest)
    verdict = signing.check(
        body.scheme,
        body.headers,
        body.body.encode(),
        body.secret,
        body.tolerance_seconds,
    )
    return web.json_response(verdict.as_dict())


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/v1/verify",
        verify_message,
        "Check a received webhook's signature: valid, or why not (code and reason).",
        VerifyRequest,
        notes=(
            'The reply is 200 either way: `{"valid": true}` or `{"valid": false, "code": ..., '
            '"reason": ...}` with code one of missing_header, malformed_header, '
            "timestamp_outside_tolerance, signature_mismatch, wrong_secret_format.",
        ),
    ),
)
