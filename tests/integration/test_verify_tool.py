"""The verify tool over real HTTP (POST /api/v1/verify) and as a real process (pgcourier verify)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from pgcourier import signing
from pgcourier.logs import configure_logging
from tests.integration.helpers import AUTH
from tests.integration.test_cli import cli_env, pgcourier

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
RAW = "It's a Secret to Everybody"
BODY = '{"amount": 12, "note": "é"}'
SECRETS = {"standard": WHSEC, "github": RAW, "timestamped-hex": RAW, "stripe-style": RAW}


def fresh(scheme: str, secret: str | None = None, *, ago: int = 0) -> dict[str, str]:
    return signing.sign_headers(
        scheme,
        [secret or SECRETS[scheme]],
        "msg_1",
        "order.paid",
        BODY.encode(),
        timestamp=int(time.time()) - ago,
    )


def cases(scheme: str) -> list[tuple[str, dict[str, str], str, str]]:
    """(expected code, headers, body, secret) for each way a message of ``scheme`` can fail."""
    good = fresh(scheme)
    first_needed = next(iter(h for h in good if not h.startswith("x-webhook-event")))
    out = [
        ("missing_header", {k: v for k, v in good.items() if k != first_needed}, BODY, ""),
        ("signature_mismatch", good, BODY + " ", ""),
        ("wrong_secret_format", good, BODY, "short"),
        ("malformed_header", {**good, first_needed: "é"}, BODY, ""),
    ]
    if scheme != "github":
        out.append(("timestamp_outside_tolerance", fresh(scheme, ago=3600), BODY, ""))
    return [(code, h, b, s or SECRETS[scheme]) for code, h, b, s in out]


# (scheme, code) only: the headers are signed when the test runs, not at collection (a full run
# reaches these tests minutes later, when a timestamp signed then is outside the tolerance).
ALL = [(scheme, case[0]) for scheme in signing.SCHEMES for case in cases(scheme)]


def case(scheme: str, code: str) -> tuple[dict[str, str], str, str]:
    """(headers, body, secret) of ``scheme``'s failure ``code``, signed now."""
    [(headers, body, secret)] = [(h, b, s) for c, h, b, s in cases(scheme) if c == code]
    return headers, body, secret


@pytest.mark.parametrize("scheme", signing.SCHEMES)
async def test_api_says_valid(api: Any, scheme: str) -> None:
    response = await api.post(
        "/api/v1/verify",
        headers=AUTH,
        json={"scheme": scheme, "secret": SECRETS[scheme], "headers": fresh(scheme), "body": BODY},
    )
    assert response.status == 200
    assert await response.json() == {"valid": True}


@pytest.mark.parametrize(("scheme", "code"), ALL)
async def test_api_says_why_not(api: Any, scheme: str, code: str) -> None:
    headers, body, secret = case(scheme, code)
    response = await api.post(
        "/api/v1/verify",
        headers=AUTH,
        json={"scheme": scheme, "secret": secret, "headers": headers, "body": body},
    )
    assert response.status == 200
    reply = await response.json()
    assert reply["valid"] is False
    assert reply["code"] == code
    assert reply["reason"]
    assert secret not in reply["reason"]


async def test_api_tolerance_is_a_parameter(api: Any) -> None:
    request = {"scheme": "standard", "secret": WHSEC, "headers": fresh("standard", ago=600)}
    for tolerance, valid in ((900, True), (300, False)):
        response = await api.post(
            "/api/v1/verify",
            headers=AUTH,
            json={**request, "body": BODY, "tolerance_seconds": tolerance},
        )
        assert (await response.json())["valid"] is valid


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scheme": "svix", "secret": WHSEC, "body": ""}, "scheme"),
        ({"scheme": "standard", "body": ""}, "secret"),
        ({"scheme": "standard", "secret": WHSEC}, "body"),
        ({"scheme": "standard", "secret": WHSEC, "body": "", "headers": []}, "headers"),
        ({"scheme": "standard", "secret": WHSEC, "body": "", "headers": {"a": 5}}, "headers.a"),
        ({"scheme": "standard", "secret": WHSEC, "body": "", "tolerance_seconds": -1}, None),
        ({"scheme": "standard", "secret": WHSEC, "body": "", "extra": 1}, "extra"),
    ],
)
async def test_api_refuses_malformed_requests(
    api: Any, body: dict[str, Any], field: str | None
) -> None:
    response = await api.post("/api/v1/verify", headers=AUTH, json=body)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["field"].startswith(field or "tolerance_seconds")
    assert WHSEC not in json.dumps(error)


def header_args(headers: dict[str, str]) -> list[str]:
    return [arg for name, value in headers.items() for arg in ("--header", f"{name}: {value}")]


async def verify_cli(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgcourier",
        "verify",
        *args,
        env=cli_env(None),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin or b""), 60)
    return await proc.wait(), out.decode(), err.decode()


@pytest.mark.parametrize("scheme", signing.SCHEMES)
async def test_cli_valid_from_stdin_and_from_a_file(scheme: str, tmp_path: Path) -> None:
    args = ["--scheme", scheme, "--secret", SECRETS[scheme], *header_args(fresh(scheme))]
    assert await verify_cli(*args, stdin=BODY.encode()) == (0, "valid\n", "")
    body_file = tmp_path / "body.json"
    body_file.write_bytes(BODY.encode())
    assert await verify_cli(*args, "--body-file", str(body_file)) == (0, "valid\n", "")


@pytest.mark.parametrize(("scheme", "code"), ALL)
async def test_cli_says_why_not_in_one_line(scheme: str, code: str) -> None:
    headers, body, secret = case(scheme, code)
    status, out, err = await verify_cli(
        "--scheme", scheme, "--secret", secret, *header_args(headers), stdin=body.encode()
    )
    assert status == 1, err
    assert out.startswith(f"invalid ({code}): ")
    assert out.count("\n") == 1
    assert secret not in out + err


async def test_cli_secret_file_json_and_tolerance(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(WHSEC + "\n")
    headers = header_args(fresh("standard", ago=600))
    args = ["--secret-file", str(secret_file), *headers]
    status, out, _ = await verify_cli("--json", *args, stdin=BODY.encode())
    assert status == 1
    assert json.loads(out)["code"] == "timestamp_outside_tolerance"
    status, out, _ = await verify_cli("--tolerance", "15m", *args, stdin=BODY.encode())
    assert (status, out) == (0, "valid\n")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--scheme", "svix", "--secret", WHSEC], "invalid choice"),
        (["--secret", WHSEC, "--header", "no-colon"], "is not NAME:VALUE"),
        (["--secret", WHSEC, "--body-file", "/nonexistent/body"], "cannot read"),
        (["--secret", WHSEC, "--tolerance", "soon"], "--tolerance"),
        ([], "give --secret"),
        (["--secret-file", "-"], "stdin cannot hold both"),
    ],
)
async def test_cli_usage_errors_exit_2(args: list[str], words: str) -> None:
    status, out, err = await verify_cli(*args, stdin=WHSEC.encode())
    assert status == 2
    assert out == ""
    assert words in err
    assert err.count("\n") == 1
    assert WHSEC not in err


async def test_cli_top_level_json_flag(tmp_path: Path) -> None:
    status, out, _ = await pgcourier(
        "verify",
        "--secret",
        WHSEC,
        *header_args(fresh("standard")),
        "--body-file",
        "/dev/null",
        dsn=None,
    )
    assert status == 1
    assert json.loads(out) == {
        "valid": False,
        "code": "signature_mismatch",
        "reason": json.loads(out)["reason"],
    }


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """pgcourier's logs as the CLI sets them up (JSON, debug) into a buffer; libraries' go to
    caplog (as in test_secrets_never_logged)."""
    caplog.set_level(logging.DEBUG)
    buffer = io.StringIO()
    configure_logging("debug", "json", stream=buffer)
    try:
        yield buffer
    finally:
        structlog.reset_defaults()


async def test_the_secret_is_never_logged(api: Any, log_lines: io.StringIO, caplog: Any) -> None:
    secret = "whsec_" + "c2VjcmV0LW9uZS1zZWNyZXQtb25lLXNlY3JldC1vbmU="
    requests = [
        {
            "scheme": "standard",
            "secret": secret,
            "headers": fresh("standard", secret),
            "body": BODY,
        },
        {"scheme": "standard", "secret": secret, "headers": {}, "body": BODY},
        {"scheme": "github", "secret": secret, "headers": {"x": 5}, "body": BODY},  # a 422
        {"scheme": "svix", "secret": secret, "body": BODY},  # a 422
    ]
    for request in requests:
        response = await api.post("/api/v1/verify", headers=AUTH, json=request)
        assert secret not in await response.text()
    logged = log_lines.getvalue() + caplog.text
    assert secret not in logged
    assert secret.removeprefix("whsec_") not in logged
