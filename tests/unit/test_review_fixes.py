"""Refusals found in review: each input used to crash (a 500) or poison the relay's start."""

from __future__ import annotations

import math

import pytest

from pgcourier import ops, signing
from pgcourier.errors import InvalidInput
from pgcourier.payload_schemas import SchemaProblem, check_instance, compile_schema
from pgcourier.settings import Settings


def test_a_raw_secret_spelled_like_an_encrypted_value_is_refused() -> None:
    # Stored as is, it would be taken for a sealed value that no key opens: no relay starts.
    with pytest.raises(InvalidInput, match="enc:") as caught:
        ops.validate_secret("enc:v1:AAAAAAAAAAAAAAAAAAAA", "github")
    assert caught.value.field == "secret"
    assert ops.validate_secret("a perfectly fine secret", "github") == "a perfectly fine secret"


@pytest.mark.parametrize("number", [math.nan, math.inf, 1e308 * 10])
def test_non_finite_numbers_are_a_schema_problem_not_a_crash(number: float) -> None:
    validator = compile_schema({"properties": {"a": {"multipleOf": 0.5}}})
    with pytest.raises(SchemaProblem) as caught:
        check_instance(validator, {"a": number}, root="payload")
    assert caught.value.field == "payload"


def test_a_pre_draft_4_required_flag_does_not_crash_the_path_naming() -> None:
    validator = compile_schema(
        {
            "$schema": "http://json-schema.org/draft-03/schema#",
            "properties": {"a": {"type": "string", "required": True}},
        }
    )
    check_instance(validator, {"a": "x"}, root="payload")
    with pytest.raises(SchemaProblem) as caught:
        check_instance(validator, {}, root="payload")  # "required" is a flag, not a list here
    assert caught.value.field.startswith("payload")


def test_a_non_ascii_standard_secret_is_a_wrong_format_verdict() -> None:
    headers = signing.sign_headers(
        "standard", ["whsec_" + "A" * 32], "msg_1", "t.x", b"{}", timestamp=1
    )
    verdict = signing.check("standard", headers, b"{}", "whsec_" + "é" * 32)
    assert not verdict.valid
    assert verdict.code == "wrong_secret_format"


def test_retention_longer_than_a_century_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="retention"):
        Settings(retention="1000000d")
