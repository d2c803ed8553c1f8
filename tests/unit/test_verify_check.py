"""signing.check: every scheme x every reason a message fails, each with its code and words."""

from __future__ import annotations

import pytest

from pgcourier import ops, signing
from pgcourier.signing import (
    InvalidSecret,
    MissingHeader,
    SignatureMismatch,
    TimestampOutsideTolerance,
    WebhookVerificationError,
    check,
    sign_headers,
    verify,
)

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
RAW = "It's a Secret to Everybody"
BODY = b'{"test": 2432232314}'
TS = 1614265330
SECRETS = {"standard": WHSEC, "github": RAW, "timestamped-hex": RAW, "stripe-style": RAW}
# The headers each scheme cannot do without (the x-webhook-event* ones are informative only).
REQUIRED = {
    "standard": ("webhook-id", "webhook-timestamp", "webhook-signature"),
    "github": ("x-hub-signature-256",),
    "timestamped-hex": ("x-webhook-signature", "x-webhook-timestamp"),
    "stripe-style": ("x-webhook-signature",),
}
TIMED = ("standard", "timestamped-hex", "stripe-style")


def signed(scheme: str, secret: str | None = None) -> dict[str, str]:
    return sign_headers(
        scheme, [secret or SECRETS[scheme]], "msg_1", "order.paid", BODY, timestamp=TS
    )


@pytest.mark.parametrize("scheme", signing.SCHEMES)
def test_a_good_message_is_valid(scheme: str) -> None:
    verdict = check(scheme, signed(scheme), BODY, SECRETS[scheme], now=TS + 5)
    assert verdict == signing.Verdict(True)
    assert verdict.as_dict() == {"valid": True}


def test_the_conformance_vector_is_valid() -> None:
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    assert check("standard", headers, BODY, WHSEC, now=TS).valid


@pytest.mark.parametrize(
    ("scheme", "header"), [(s, h) for s, names in REQUIRED.items() for h in names]
)
def test_a_missing_header_is_named(scheme: str, header: str) -> None:
    headers = {k: v for k, v in signed(scheme).items() if k != header}
    verdict = check(scheme, headers, BODY, SECRETS[scheme], now=TS)
    assert verdict.code == "missing_header"
    assert verdict.reason == f"missing header {header}"
    with pytest.raises(MissingHeader) as raised:
        verify(scheme, headers, BODY, SECRETS[scheme], now=TS)
    assert raised.value.header == header


@pytest.mark.parametrize("scheme", TIMED)
@pytest.mark.parametrize(("offset", "when"), [(-412, "in the past"), (1000, "in the future")])
def test_a_stale_timestamp_says_by_how_much(scheme: str, offset: int, when: str) -> None:
    # offset is timestamp - now: the message was signed 412 s ago, or 1000 s ahead of us.
    verdict = check(scheme, signed(scheme), BODY, SECRETS[scheme], now=TS - offset)
    assert verdict.code == "timestamp_outside_tolerance"
    beyond = abs(offset) - 300
    assert f"{abs(offset)} s {when}, {beyond} s beyond the 300 s tolerance" in (
        verdict.reason or ""
    )
    with pytest.raises(TimestampOutsideTolerance) as raised:
        verify(scheme, signed(scheme), BODY, SECRETS[scheme], now=TS - offset)
    assert raised.value.offset == offset


@pytest.mark.parametrize("scheme", TIMED)
def test_the_tolerance_is_a_parameter(scheme: str) -> None:
    assert check(scheme, signed(scheme), BODY, SECRETS[scheme], 3600, now=TS + 3000).valid
    assert not check(scheme, signed(scheme), BODY, SECRETS[scheme], 60, now=TS + 61).valid


def test_github_has_no_timestamp_to_go_stale() -> None:
    assert check("github", signed("github"), BODY, RAW, now=TS + 10**6).valid


@pytest.mark.parametrize("scheme", signing.SCHEMES)
@pytest.mark.parametrize("change", ["secret", "body"])
def test_a_wrong_secret_or_body_is_a_mismatch(scheme: str, change: str) -> None:
    other = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD" if scheme == "standard" else RAW + "!"
    secret = other if change == "secret" else SECRETS[scheme]
    body = BODY if change == "secret" else BODY.replace(b": ", b":")
    verdict = check(scheme, signed(scheme), body, secret, now=TS)
    assert verdict.code == "signature_mismatch"
    assert "exact bytes received" in (verdict.reason or "")
    with pytest.raises(SignatureMismatch):
        verify(scheme, signed(scheme), body, secret, now=TS)


@pytest.mark.parametrize(
    ("scheme", "secret", "words"),
    [
        ("standard", RAW, "starts with 'whsec_'"),
        ("standard", "whsec_not base64!", "not valid base64"),
        ("standard", "whsec_", "is empty"),
        ("github", "short", "16-500 printable ASCII"),
        ("timestamped-hex", RAW + "\n", "16-500 printable ASCII"),
        ("stripe-style", "é" * 20, "16-500 printable ASCII"),
    ],
)
def test_a_wrong_secret_format_is_reported_first(scheme: str, secret: str, words: str) -> None:
    # Even with no headers at all: a secret of the wrong shape explains every other failure.
    verdict = check(scheme, {}, BODY, secret, now=TS)
    assert verdict.code == "wrong_secret_format"
    assert words in (verdict.reason or "")
    if secret != "whsec_":
        assert secret.strip() not in (verdict.reason or "")  # never echoed


@pytest.mark.parametrize(
    ("scheme", "header", "value", "words"),
    [
        ("standard", "webhook-signature", "v2,abc", "no v1 signature"),
        ("standard", "webhook-timestamp", "+1614265330", "not an integer"),
        ("standard", "webhook-id", "msg_é", "non-ASCII"),
        ("github", "x-hub-signature-256", "md5=abc", "no signature in header"),
        ("timestamped-hex", "x-webhook-timestamp", "soon", "not an integer"),
        ("stripe-style", "x-webhook-signature", "v1=abc", "exactly one t="),
    ],
)
def test_a_malformed_header_says_which(scheme: str, header: str, value: str, words: str) -> None:
    headers = {**signed(scheme), header: value}
    verdict = check(scheme, headers, BODY, SECRETS[scheme], now=TS)
    assert verdict.code == "malformed_header"
    assert words in (verdict.reason or "")


def test_every_failure_is_still_a_verification_error() -> None:
    # Receivers catching the base class (the documented way) keep working.
    for cls in (MissingHeader, SignatureMismatch, TimestampOutsideTolerance):
        assert issubclass(cls, WebhookVerificationError)
    assert issubclass(InvalidSecret, ValueError)
    with pytest.raises(ValueError, match="whsec_"):
        verify("standard", signed("standard"), BODY, RAW, now=TS)


def test_an_unknown_scheme_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="unknown signature scheme"):
        check("svix", {}, BODY, WHSEC)


def test_the_raw_secret_rule_is_the_one_endpoints_are_held_to() -> None:
    assert signing.RAW_SECRET_PATTERN == ops.RAW_SECRET_PATTERN
