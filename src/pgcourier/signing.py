"""Webhook signatures: pure functions of (secret, id, timestamp, exact body bytes).

The default scheme is Standard Webhooks (https://www.standardwebhooks.com/):

* signed content: ``{webhook-id}.{webhook-timestamp}.{body}``
* key: base64-decoded secret after its ``whsec_`` prefix
* header ``webhook-signature``: ``v1,<base64 HMAC-SHA256>``; several space-separated signatures
  may be present (secret rotation) and versions a verifier does not know are skipped.

Receivers call :func:`verify`::

    from pgcourier.signing import verify, WebhookVerificationError

    try:
        verify("standard", request.headers, await request.read(), "whsec_...")
    except WebhookVerificationError:
        return web.Response(status=400)

Always verify the exact bytes received; never parse and re-serialise JSON first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300
SCHEMES = ("standard",)


class WebhookVerificationError(Exception):
    """The message's signature is missing, malformed, stale or wrong."""


def generate_secret(nbytes: int = 24) -> str:
    """A new ``whsec_`` secret holding ``nbytes`` (at least 24) random bytes."""
    if nbytes < 24:
        raise ValueError("a secret needs at least 24 random bytes")
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(nbytes)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (base64 after the prefix)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a Standard Webhooks secret starts with 'whsec_'")
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise ValueError("the secret after 'whsec_' is not valid base64") from exc


def _hmac_sha256(key: bytes, content: bytes) -> bytes:
    return hmac.new(key, content, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature ``v1,<base64>`` of one message."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(_hmac_sha256(secret_key(secret), content)).decode()


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    """Headers carrying the signature of one attempt."""

    msg_id: str
    timestamp: int
    signature: str

    def as_dict(self) -> dict[str, str]:
        return {
            "webhook-id": self.msg_id,
            "webhook-timestamp": str(self.timestamp),
            "webhook-signature": self.signature,
        }


def sign_message(
    secrets: Sequence[str], msg_id: str, body: bytes, *, timestamp: int | None = None
) -> SignedHeaders:
    """Sign ``body`` once per active secret (one during a rotation grace period has two)."""
    ts = int(time.time()) if timestamp is None else timestamp
    signature = " ".join(sign(s, msg_id, ts, body) for s in secrets)
    return SignedHeaders(msg_id=msg_id, timestamp=ts, signature=signature)


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise WebhookVerificationError(f"missing header {name}")


def _check_timestamp(raw: str, tolerance: int, now: float | None) -> int:
    try:
        ts = int(raw)
    except ValueError as exc:
        raise WebhookVerificationError("timestamp is not an integer") from exc
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        raise WebhookVerificationError("timestamp is outside the tolerance window")
    return ts


def _verify_standard(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    tolerance: int,
    now: float | None,
) -> None:
    msg_id = _header(headers, "webhook-id")
    ts = _check_timestamp(_header(headers, "webhook-timestamp"), tolerance, now)
    offered = [
        part[3:] for part in _header(headers, "webhook-signature").split() if part.startswith("v1,")
    ]
    if not any(offered):
        raise WebhookVerificationError("no v1 signature in webhook-signature")
    content = f"{msg_id}.{ts}.".encode() + body
    for secret in secrets:
        expected = base64.b64encode(_hmac_sha256(secret_key(secret), content)).decode()
        for candidate in offered:
            if candidate and hmac.compare_digest(expected, candidate):
                return
    raise WebhookVerificationError("no matching signature")


def verify(
    scheme: str,
    headers: Mapping[str, str],
    body: bytes,
    secrets: str | Sequence[str],
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> None:
    """Check a received webhook; raise :class:`WebhookVerificationError` if it is not genuine.

    ``secrets`` may be one secret or several (accept either during your own rotation). Header
    names are matched case-insensitively. ``now`` overrides the clock (for tests).
    """
    secret_list = [secrets] if isinstance(secrets, str) else list(secrets)
    if not secret_list:
        raise ValueError("at least one secret is needed")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown signature scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    _verify_standard(headers, body, secret_list, tolerance, now)
