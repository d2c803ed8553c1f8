"""Standard Webhooks signing against the vectors in shared/CONFORMANCE.md."""

from __future__ import annotations

import base64

import pytest

from pgcourier.signing import (
    WebhookVerificationError,
    generate_secret,
    secret_key,
    sign,
    sign_message,
    verify,
)

VECTORS = [
    (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    ),
    (
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        1649367553,
        b'{"email":"test@example.com","username":"test_user"}',
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
    ),
]


def headers(msg_id: str, ts: int, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


@pytest.mark.parametrize(("secret", "msg_id", "ts", "body", "expected"), VECTORS)
def test_sign_reproduces_the_vectors(
    secret: str, msg_id: str, ts: int, body: bytes, expected: str
) -> None:
    assert sign(secret, msg_id, ts, body) == expected


@pytest.mark.parametrize(("secret", "msg_id", "ts", "body", "expected"), VECTORS)
def test_verify_accepts_the_vectors(
    secret: str, msg_id: str, ts: int, body: bytes, expected: str
) -> None:
    verify("standard", headers(msg_id, ts, expected), body, secret, now=ts)


SECRET, MSG_ID, TS, BODY, GOOD = VECTORS[0]


@pytest.mark.parametrize(
    "signature",
    [
        GOOD[:-4] + "1OA=",  # last characters changed
        "v1,",  # bare version
        "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",  # only unknown versions
        "",
    ],
)
def test_verify_rejects_bad_signatures(signature: str) -> None:
    with pytest.raises(WebhookVerificationError):
        verify("standard", headers(MSG_ID, TS, signature), BODY, SECRET, now=TS)


def test_verify_skips_unknown_versions() -> None:
    verify("standard", headers(MSG_ID, TS, f"v2,xyz {GOOD}"), BODY, SECRET, now=TS)


@pytest.mark.parametrize("skew", [301, -301, 10_000])
def test_verify_rejects_timestamps_outside_tolerance(skew: int) -> None:
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify("standard", headers(MSG_ID, TS, GOOD), BODY, SECRET, now=TS + skew)


@pytest.mark.parametrize("skew", [300, -300, 0])
def test_verify_accepts_timestamps_inside_tolerance(skew: int) -> None:
    verify("standard", headers(MSG_ID, TS, GOOD), BODY, SECRET, now=TS + skew)


def test_verify_rejects_a_changed_body_or_id() -> None:
    with pytest.raises(WebhookVerificationError):
        verify("standard", headers(MSG_ID, TS, GOOD), BODY + b" ", SECRET, now=TS)
    with pytest.raises(WebhookVerificationError):
        verify("standard", headers(MSG_ID + "x", TS, GOOD), BODY, SECRET, now=TS)


def test_verify_reports_missing_headers_and_matches_names_case_insensitively() -> None:
    with pytest.raises(WebhookVerificationError, match="webhook-signature"):
        verify(
            "standard", {"webhook-id": MSG_ID, "webhook-timestamp": str(TS)}, BODY, SECRET, now=TS
        )
    upper = {k.upper(): v for k, v in headers(MSG_ID, TS, GOOD).items()}
    verify("standard", upper, BODY, SECRET, now=TS)


def test_rotation_signs_with_every_secret_and_either_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    signed = sign_message([old, new], "evt_1", BODY, timestamp=TS)
    assert len(signed.signature.split()) == 2
    for secret in (old, new):
        verify("standard", signed.as_dict(), BODY, secret, now=TS)
    with pytest.raises(WebhookVerificationError):
        verify("standard", signed.as_dict(), BODY, generate_secret(), now=TS)


def test_generated_secrets_are_whsec_with_at_least_24_random_bytes() -> None:
    secrets = {generate_secret() for _ in range(50)}
    assert len(secrets) == 50
    for s in secrets:
        assert s.startswith("whsec_")
        assert len(secret_key(s)) == 24
    assert len(base64.b64decode(generate_secret(32)[6:])) == 32
    with pytest.raises(ValueError, match="24"):
        generate_secret(16)


def test_unknown_scheme_and_bad_secrets_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown signature scheme"):
        verify("md5", {}, b"", SECRET)
    with pytest.raises(ValueError, match="whsec_"):
        secret_key("nope")
    with pytest.raises(ValueError, match="base64"):
        secret_key("whsec_!!!")
