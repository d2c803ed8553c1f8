"""Webhook signatures: pure functions of (secret, id, timestamp, exact body bytes).

Four schemes, chosen per endpoint, so that receivers built for the systems pgcourier replaces
keep their verification code. All use HMAC-SHA256 over the exact bytes sent.

``standard`` (default): Standard Webhooks (https://www.standardwebhooks.com/)

* signed content: ``{webhook-id}.{webhook-timestamp}.{body}``
* key: base64-decoded secret after its ``whsec_`` prefix
* header ``webhook-signature``: ``v1,<base64 HMAC-SHA256>``; several space-separated signatures
  may be present (secret rotation) and versions a verifier does not know are skipped.

``github``: ``X-Hub-Signature-256: sha256=<hex HMAC of the body>``, key = the secret's UTF-8
bytes; no timestamp (as GitHub). ``timestamped-hex``: ``X-Webhook-Signature: <hex HMAC of
"{timestamp}.{body}">`` with ``X-Webhook-Timestamp``. ``stripe-style``: ``X-Webhook-Signature:
t=<timestamp>,v1=<hex HMAC of "{timestamp}.{body}">``. These three also send
``X-Webhook-Event`` (the event type) and ``X-Webhook-Event-Id`` (the event id: the same on every
retry and replay, the key to deduplicate on).

During a secret rotation every scheme carries one signature per active secret: space-separated
for ``standard``, comma-separated ``sha256=`` and hex values for ``github`` and
``timestamped-hex`` (RFC 9110 list syntax), repeated ``v1=`` for ``stripe-style``.

Receivers call :func:`verify`::

    from pgcourier.signing import verify, WebhookVerificationError

    try:
        verify("standard", request.headers, await request.read(), "whsec_...")
    except WebhookVerificationError:
        return web.Response(status=400)

Always verify the exact bytes received; never parse and re-serialise JSON first. Header values
pgcourier reads must be ASCII (timestamps plain digits): anything else is a
:class:`WebhookVerificationError`, never another exception.

Each way a message can fail is its own subclass with a stable ``code`` (:class:`MissingHeader`,
:class:`MalformedHeader`, :class:`TimestampOutsideTolerance`, :class:`SignatureMismatch`), so
that :func:`check` (behind ``pgcourier verify`` and ``POST /api/v1/verify``) can say exactly why
a message does not verify. A secret that cannot be a key of the scheme is :class:`InvalidSecret`,
a :class:`ValueError` (the receiver's configuration is wrong, not the message).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets as _secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300
SCHEMES = ("standard", "github", "timestamped-hex", "stripe-style")
_DIGITS = re.compile(r"[0-9]{1,15}")


class WebhookVerificationError(Exception):
    """The message's signature is missing, malformed, stale or wrong."""

    code = "invalid"


class MissingHeader(WebhookVerificationError):
    """A header the scheme needs is absent (``header`` names it)."""

    code = "missing_header"

    def __init__(self, header: str) -> None:
        super().__init__(f"missing header {header}")
        self.header = header


class MalformedHeader(WebhookVerificationError):
    """A header is present but cannot hold a signature or timestamp pgcourier sends."""

    code = "malformed_header"


class TimestampOutsideTolerance(WebhookVerificationError):
    """The signed timestamp is too far from now: ``offset`` seconds (negative: in the past)."""

    code = "timestamp_outside_tolerance"

    def __init__(self, offset: float, tolerance: int) -> None:
        when = "in the past" if offset < 0 else "in the future"
        beyond = abs(offset) - tolerance
        super().__init__(
            f"timestamp is outside the tolerance window: {abs(offset):.0f} s {when}, "
            f"{beyond:.0f} s beyond the {tolerance} s tolerance"
        )
        self.offset = offset
        self.tolerance = tolerance


class SignatureMismatch(WebhookVerificationError):
    """Signatures are present and well-formed, but none matches the secret(s) and body."""

    code = "signature_mismatch"


class InvalidSecret(ValueError):
    """The secret cannot be a key of the scheme (e.g. no ``whsec_`` for ``standard``)."""

    code = "wrong_secret_format"


def generate_secret(nbytes: int = 24) -> str:
    """A new ``whsec_`` secret holding ``nbytes`` (at least 24) random bytes."""
    if nbytes < 24:
        raise ValueError("a secret needs at least 24 random bytes")
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(nbytes)).decode()


@functools.lru_cache(maxsize=1024)
def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (base64 after the prefix). Cached: a pure function
    the relay calls on every attempt with the same few secrets."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret("a Standard Webhooks secret starts with 'whsec_'")
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII text
        raise InvalidSecret("the secret after 'whsec_' is not valid base64") from exc


_MISMATCH = (
    "no matching signature: none in the header matches this secret and body (check the secret, "
    "and that the body is the exact bytes received, not re-serialised JSON)"
)


@functools.lru_cache(maxsize=1024)
def _keyed(key: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 with its key already absorbed, to be copied per message: the relay signs
    every attempt with one of a few secrets, and the key schedule was half the cost of signing a
    small body (1.9 against 3.7 us)."""
    return hmac.new(key, digestmod=hashlib.sha256)


def _hmac_sha256(key: bytes, content: bytes) -> bytes:
    mac = _keyed(key).copy()
    mac.update(content)
    return mac.digest()


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


def _hex(secret: str, content: bytes) -> str:
    return _hmac_sha256(secret.encode(), content).hex()


def sign_headers(
    scheme: str,
    secrets: Sequence[str],
    msg_id: str,
    event_type: str,
    body: bytes,
    *,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The headers that sign one attempt of ``body`` under ``scheme``, one signature per secret
    (the current secret first)."""
    if not secrets:
        raise ValueError("at least one secret is needed")
    ts = int(time.time()) if timestamp is None else timestamp
    if scheme == "standard":
        return sign_message(secrets, msg_id, body, timestamp=ts).as_dict()
    meta = {"x-webhook-event": event_type, "x-webhook-event-id": msg_id}
    if scheme == "github":
        value = ", ".join("sha256=" + _hex(s, body) for s in secrets)
        return {"x-hub-signature-256": value, **meta}
    content = f"{ts}.".encode() + body
    if scheme == "timestamped-hex":
        value = ", ".join(_hex(s, content) for s in secrets)
        return {"x-webhook-signature": value, "x-webhook-timestamp": str(ts), **meta}
    if scheme == "stripe-style":
        value = ",".join([f"t={ts}", *(f"v1={_hex(s, content)}" for s in secrets)])
        return {"x-webhook-signature": value, **meta}
    raise ValueError(f"unknown signature scheme {scheme!r}; known: {', '.join(SCHEMES)}")


def sign_message(
    secrets: Sequence[str], msg_id: str, body: bytes, *, timestamp: int | None = None
) -> SignedHeaders:
    """Sign ``body`` once per active secret (one during a rotation grace period has two)."""
    ts = int(time.time()) if timestamp is None else timestamp
    signature = " ".join(sign(s, msg_id, ts, body) for s in secrets)
    return SignedHeaders(msg_id=msg_id, timestamp=ts, signature=signature)


def _header(headers: Mapping[str, str], name: str) -> str:
    """Every value of header ``name`` (any case), joined as one comma-separated list."""
    values = [value for key, value in headers.items() if key.lower() == name]
    if not values:
        raise MissingHeader(name)
    joined = ", ".join(values)
    # pgcourier only ever sends ASCII here. Anything else is forged or mangled, and would
    # otherwise escape as TypeError (hmac.compare_digest refuses non-ASCII str) or
    # UnicodeEncodeError (aiohttp hands undecodable bytes over as lone surrogates): a 500 in
    # the receiver instead of a rejection.
    if not joined.isascii():
        raise MalformedHeader(f"header {name} holds non-ASCII characters")
    return joined


def _list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _match_hex(secrets: Sequence[str], content: bytes, offered: Sequence[str], header: str) -> None:
    if not offered:
        raise MalformedHeader(f"no signature in header {header}")
    for secret in secrets:
        expected = _hex(secret, content)
        for candidate in offered:
            if hmac.compare_digest(expected, candidate.lower()):
                return
    raise SignatureMismatch(_MISMATCH)


def _verify_github(headers: Mapping[str, str], body: bytes, secrets: Sequence[str]) -> None:
    offered = [
        part[len("sha256=") :]
        for part in _list(_header(headers, "x-hub-signature-256"))
        if part.startswith("sha256=")
    ]
    _match_hex(secrets, body, offered, "x-hub-signature-256")


def _verify_timestamped_hex(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    tolerance: int,
    now: float | None,
) -> None:
    ts = _check_timestamp(_header(headers, "x-webhook-timestamp"), tolerance, now)
    offered = _list(_header(headers, "x-webhook-signature"))
    _match_hex(secrets, f"{ts}.".encode() + body, offered, "x-webhook-signature")


def _verify_stripe_style(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    tolerance: int,
    now: float | None,
) -> None:
    pairs = [part.partition("=") for part in _list(_header(headers, "x-webhook-signature"))]
    stamps = [value for key, _, value in pairs if key == "t"]
    if len(stamps) != 1:
        raise MalformedHeader("header x-webhook-signature needs exactly one t=")
    ts = _check_timestamp(stamps[0], tolerance, now)
    offered = [value for key, _, value in pairs if key == "v1" and value]
    _match_hex(secrets, f"{ts}.".encode() + body, offered, "x-webhook-signature")


def _check_timestamp(raw: str, tolerance: int, now: float | None) -> int:
    # Digits only: int() would also take " 17", "+17" and "1_7", none of which pgcourier sends.
    if not _DIGITS.fullmatch(raw):
        raise MalformedHeader("timestamp is not an integer")
    ts = int(raw)
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        raise TimestampOutsideTolerance(ts - current, tolerance)
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
    # (rstrip: a header sent twice arrives joined by ", ", and base64 never holds a comma)
    offered = [
        part.rstrip(",")[3:]
        for part in _header(headers, "webhook-signature").split()
        if part.startswith("v1,")
    ]
    if not any(offered):
        raise MalformedHeader("no v1 signature in webhook-signature")
    content = f"{msg_id}.{ts}.".encode() + body
    for secret in secrets:
        expected = base64.b64encode(_hmac_sha256(secret_key(secret), content)).decode()
        for candidate in offered:
            if candidate and hmac.compare_digest(expected, candidate):
                return
    raise SignatureMismatch(_MISMATCH)


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
    names are matched case-insensitively, and a header sent several times counts as one list.
    ``tolerance`` (seconds) bounds the timestamp's distance from now, for the schemes that carry
    one (all but ``github``). ``now`` overrides the clock (for tests).
    """
    secret_list = [secrets] if isinstance(secrets, str) else list(secrets)
    if not secret_list:
        raise ValueError("at least one secret is needed")
    if scheme == "standard":
        _verify_standard(headers, body, secret_list, tolerance, now)
    elif scheme == "github":
        _verify_github(headers, body, secret_list)
    elif scheme == "timestamped-hex":
        _verify_timestamped_hex(headers, body, secret_list, tolerance, now)
    elif scheme == "stripe-style":
        _verify_stripe_style(headers, body, secret_list, tolerance, now)
    else:
        raise ValueError(f"unknown signature scheme {scheme!r}; known: {', '.join(SCHEMES)}")


# Secrets of the schemes that key HMAC with the secret's own bytes, as pgcourier accepts them
# (ops.validation.RAW_SECRET_PATTERN; a unit test keeps the two equal).
RAW_SECRET_PATTERN = r"^[ -~]{16,500}$"


def check_secret(scheme: str, secret: str) -> None:
    """Raise :class:`InvalidSecret` if ``secret`` cannot be one pgcourier signs ``scheme`` with
    (``ValueError`` for an unknown scheme). The message never quotes the secret."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown signature scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    if scheme == "standard":
        if not secret_key(secret):
            raise InvalidSecret("the secret after 'whsec_' is empty")
    elif not re.fullmatch(RAW_SECRET_PATTERN, secret):
        raise InvalidSecret(
            f"a {scheme} secret is 16-500 printable ASCII characters (the whole secret as "
            "pgcourier shows it, whsec_ prefix included; no line break)"
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a message verifies and, when it does not, why: ``code`` is one of
    ``missing_header``, ``malformed_header``, ``timestamp_outside_tolerance``,
    ``signature_mismatch``, ``wrong_secret_format``; ``reason`` is one readable sentence."""

    valid: bool
    code: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, object]:
        if self.valid:
            return {"valid": True}
        return {"valid": False, "reason": self.reason, "code": self.code}


def check(
    scheme: str,
    headers: Mapping[str, str],
    body: bytes,
    secrets: str | Sequence[str],
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> Verdict:
    """:func:`verify` as a value: why a message does not verify, for people debugging a receiver.

    The secret is checked first (a wrong secret format explains every other failure), then the
    message exactly as :func:`verify` does. ``ValueError`` only for an unknown scheme or no
    secret: the question itself is wrong.
    """
    secret_list = [secrets] if isinstance(secrets, str) else list(secrets)
    if not secret_list:
        raise ValueError("at least one secret is needed")
    try:
        for secret in secret_list:
            check_secret(scheme, secret)
        verify(scheme, headers, body, secret_list, tolerance, now=now)
    except InvalidSecret as exc:
        return Verdict(False, InvalidSecret.code, f"wrong secret format: {exc}")
    except WebhookVerificationError as exc:
        return Verdict(False, exc.code, str(exc))
    return Verdict(True)
