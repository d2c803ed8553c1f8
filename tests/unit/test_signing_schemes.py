"""The three non-default schemes against shared/CONFORMANCE.md, plus rotation round trips."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from pgcourier.receiver import verified
from pgcourier.signing import SCHEMES, WebhookVerificationError, sign_headers, verify

SECRET = "It's a Secret to Everybody"
OTHER = "whsec_second-secret-for-rotation"
BODY = b"Hello, World!"
TS = 1614265330
# From CONFORMANCE.md (GitHub's own documented example).
GITHUB = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
# Computed once with Python's hmac module, independently of pgcourier, and pinned:
# hmac.new(SECRET.encode(), b"1614265330.Hello, World!", hashlib.sha256).hexdigest()
TIMESTAMPED = "f37376a318b83773050e9e3ac8c6d599d2254e4f69edd75a1419cb54dc7264f3"
TIMESTAMPED_OTHER = "34fb0ebe8bcb5fd3254a422817c13861a1fdd4feb0d6819c3afec6632bcb3939"


def test_github_vector() -> None:
    headers = sign_headers("github", [SECRET], "evt_1", "order.paid", BODY, timestamp=TS)
    assert headers == {
        "x-hub-signature-256": GITHUB,
        "x-webhook-event": "order.paid",
        "x-webhook-event-id": "evt_1",
    }
    verify("github", {"X-Hub-Signature-256": GITHUB}, BODY, SECRET)


def test_timestamped_hex_vector() -> None:
    headers = sign_headers("timestamped-hex", [SECRET], "evt_1", "a.b", BODY, timestamp=TS)
    assert headers["x-webhook-signature"] == TIMESTAMPED
    assert headers["x-webhook-timestamp"] == str(TS)
    assert headers["x-webhook-event-id"] == "evt_1"
    verify("timestamped-hex", headers, BODY, SECRET, now=TS + 10)


def test_stripe_style_vector() -> None:
    headers = sign_headers("stripe-style", [SECRET], "evt_1", "a.b", BODY, timestamp=TS)
    assert headers["x-webhook-signature"] == f"t={TS},v1={TIMESTAMPED}"
    verify("stripe-style", headers, BODY, SECRET, now=TS - 10)


def _tamper(value: str) -> str:
    return value[:-1] + ("0" if value[-1] != "0" else "1")


@pytest.mark.parametrize(
    ("scheme", "headers"),
    [
        ("github", {"x-hub-signature-256": _tamper(GITHUB)}),
        ("github", {"x-hub-signature-256": GITHUB.removeprefix("sha256=")}),  # no sha256=
        ("github", {"x-hub-signature-256": "sha256="}),
        ("github", {}),
        (
            "timestamped-hex",
            {"x-webhook-signature": _tamper(TIMESTAMPED), "x-webhook-timestamp": str(TS)},
        ),
        (
            "timestamped-hex",
            {"x-webhook-signature": TIMESTAMPED, "x-webhook-timestamp": str(TS + 1)},
        ),
        ("timestamped-hex", {"x-webhook-signature": TIMESTAMPED}),
        ("stripe-style", {"x-webhook-signature": f"t={TS},v1={_tamper(TIMESTAMPED)}"}),
        ("stripe-style", {"x-webhook-signature": f"t={TS},v0={TIMESTAMPED}"}),
        ("stripe-style", {"x-webhook-signature": f"v1={TIMESTAMPED}"}),
        ("stripe-style", {"x-webhook-signature": f"t={TS},t={TS},v1={TIMESTAMPED}"}),
        ("stripe-style", {"x-webhook-signature": f"t={TS},v1="}),
    ],
)
def test_bad_signatures_are_rejected(scheme: str, headers: dict[str, str]) -> None:
    with pytest.raises(WebhookVerificationError):
        verify(scheme, headers, BODY, SECRET, now=TS)


@pytest.mark.parametrize("scheme", ["timestamped-hex", "stripe-style"])
def test_stale_timestamps_are_rejected(scheme: str) -> None:
    headers = sign_headers(scheme, [SECRET], "evt_1", "a.b", BODY, timestamp=TS)
    verify(scheme, headers, BODY, SECRET, now=TS + 300)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(scheme, headers, BODY, SECRET, now=TS + 301)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(scheme, headers, BODY, SECRET, now=TS - 301)


def test_the_body_is_signed_byte_for_byte() -> None:
    for scheme in SCHEMES:
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        headers = sign_headers(scheme, [secret], "evt_1", "a.b", b'{"a":1}', timestamp=TS)
        with pytest.raises(WebhookVerificationError):
            verify(scheme, headers, b'{"a": 1}', secret, now=TS)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_rotation_carries_one_signature_per_secret(scheme: str) -> None:
    old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    new = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
    headers = sign_headers(scheme, [new, old], "evt_1", "a.b", BODY, timestamp=TS)
    # A receiver holding either secret verifies; one holding neither does not.
    verify(scheme, headers, BODY, old, now=TS)
    verify(scheme, headers, BODY, new, now=TS)
    with pytest.raises(WebhookVerificationError):
        verify(scheme, headers, BODY, "whsec_" + "A" * 32, now=TS)


def test_rotation_header_shapes() -> None:
    headers = sign_headers("timestamped-hex", [SECRET, OTHER], "e", "a.b", BODY, timestamp=TS)
    assert headers["x-webhook-signature"] == f"{TIMESTAMPED}, {TIMESTAMPED_OTHER}"
    headers = sign_headers("stripe-style", [SECRET, OTHER], "e", "a.b", BODY, timestamp=TS)
    assert headers["x-webhook-signature"] == f"t={TS},v1={TIMESTAMPED},v1={TIMESTAMPED_OTHER}"


def test_a_header_sent_twice_counts_as_one_list() -> None:
    from multidict import CIMultiDict

    headers = CIMultiDict(
        [("X-Hub-Signature-256", "sha256=" + "0" * 64), ("X-Hub-Signature-256", GITHUB)]
    )
    verify("github", headers, BODY, SECRET)


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown signature scheme 'svix'"):
        sign_headers("svix", [SECRET], "e", "a.b", BODY)
    with pytest.raises(ValueError, match="unknown signature scheme"):
        verify("svix", {}, BODY, SECRET)


async def test_receiver_decorator(aiohttp_client: Any) -> None:
    seen: list[bytes] = []

    @verified("stripe-style", secrets=[SECRET])
    async def hook(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    client = await aiohttp_client(app)
    good = sign_headers("stripe-style", [SECRET], "evt_1", "a.b", BODY)
    assert (await client.post("/hook", data=BODY, headers=good)).status == 204
    bad = sign_headers("stripe-style", [OTHER], "evt_1", "a.b", BODY)
    response = await client.post("/hook", data=BODY, headers=bad)
    assert response.status == 401
    assert "signature rejected" in (await response.json())["error"]
    assert seen == [BODY]


# Forged or mangled headers: non-ASCII text, and undecodable bytes (aiohttp hands those over as
# lone surrogates). hmac.compare_digest raises TypeError on non-ASCII str, and encoding a
# surrogate raises UnicodeEncodeError: both must be a verification error, never a crash.
_STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
_GOOD = {
    scheme: sign_headers(scheme, [_STANDARD_SECRET], "evt_1", "a.b", BODY, timestamp=TS)
    for scheme in SCHEMES
}
_SIGNATURE_HEADER = {
    "standard": "webhook-signature",
    "github": "x-hub-signature-256",
    "timestamped-hex": "x-webhook-signature",
    "stripe-style": "x-webhook-signature",
}


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("junk", ["é", "\udcff", "\uff46"])  # \uff46: a full-width f
def test_non_ascii_signature_headers_are_rejected_not_crashed(scheme: str, junk: str) -> None:
    headers = dict(_GOOD[scheme])
    name = _SIGNATURE_HEADER[scheme]
    headers[name] = headers[name][:-1] + junk  # same length, one foreign character
    with pytest.raises(WebhookVerificationError, match="non-ASCII"):
        verify(scheme, headers, BODY, _STANDARD_SECRET, now=TS)


@pytest.mark.parametrize(
    ("scheme", "name"),
    [
        ("standard", "webhook-id"),
        ("standard", "webhook-timestamp"),
        ("timestamped-hex", "x-webhook-timestamp"),
    ],
)
def test_non_ascii_ids_and_timestamps_are_rejected(scheme: str, name: str) -> None:
    headers = dict(_GOOD[scheme])
    headers[name] += "\udcff"
    with pytest.raises(WebhookVerificationError, match="non-ASCII"):
        verify(scheme, headers, BODY, _STANDARD_SECRET, now=TS)


@pytest.mark.parametrize("stamp", ["١٦١٤٢٦٥٣٣٠", f" {TS}", f"+{TS}", f"{TS:_}"])
def test_timestamps_are_plain_ascii_digits(stamp: str) -> None:
    # int() accepts all of these; a signature over a different spelling must not verify.
    headers = {**_GOOD["timestamped-hex"], "x-webhook-timestamp": stamp}
    with pytest.raises(WebhookVerificationError):
        verify("timestamped-hex", headers, BODY, _STANDARD_SECRET, now=TS)
    standard = {**_GOOD["standard"], "webhook-timestamp": stamp}
    with pytest.raises(WebhookVerificationError):
        verify("standard", standard, BODY, _STANDARD_SECRET, now=TS)


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_receiver_answers_401_to_non_ascii_signatures(
    scheme: str, aiohttp_client: Any
) -> None:
    @verified(scheme, secrets=[_STANDARD_SECRET])
    async def hook(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    client = await aiohttp_client(app)
    good = sign_headers(scheme, [_STANDARD_SECRET], "evt_1", "a.b", BODY)
    assert (await client.post("/hook", data=BODY, headers=good)).status == 204
    name = _SIGNATURE_HEADER[scheme]
    # Raw UTF-8 bytes on the wire, as a hostile sender would put them.
    forged = {**good, name: (good[name][:-1] + "é").encode().decode("latin-1")}
    response = await client.post("/hook", data=BODY, headers=forged)
    assert response.status == 401
    assert "non-ASCII" in (await response.json())["error"]
