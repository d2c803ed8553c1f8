"""Console sessions and CSRF tokens: signed, expiring, bound to the token and the action."""

from __future__ import annotations

from typing import Any

import pytest

from pgcourier.admin.ui.auth import SESSION_SECONDS, Signer

TOKEN = "a-token-of-thirty-two-characters-or-more"
NOW = 1_800_000_000.0


def test_a_session_verifies_until_it_expires() -> None:
    signer = Signer.for_token(TOKEN)
    cookie = signer.issue(now=NOW)
    session = signer.verify(cookie, now=NOW + 60)
    assert session is not None
    assert session.expires == int(NOW) + SESSION_SECONDS
    assert signer.verify(cookie, now=NOW + SESSION_SECONDS - 1) is not None
    assert signer.verify(cookie, now=NOW + SESSION_SECONDS) is None


def test_every_server_with_the_token_accepts_it_and_a_new_token_logs_out() -> None:
    cookie = Signer.for_token(TOKEN).issue(now=NOW)
    assert Signer.for_token(TOKEN).verify(cookie, now=NOW) is not None
    assert Signer.for_token(TOKEN + "-rotated").verify(cookie, now=NOW) is None


def test_without_a_token_each_process_has_its_own_key() -> None:
    cookie = Signer.for_token(None).issue(now=NOW)
    assert Signer.for_token(None).verify(cookie, now=NOW) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c.replace(c.split(".")[0], str(int(c.split(".")[0]) + 3600)),  # later expiry
        lambda c: c[:-1] + ("0" if c[-1] != "0" else "1"),  # another MAC
        lambda c: c.rsplit(".", 1)[0],  # no MAC
        lambda c: "",
        lambda c: "é" + c,
        lambda c: "x.y.z",
    ],
)
def test_a_tampered_cookie_is_no_session(tamper: Any) -> None:
    signer = Signer.for_token(TOKEN)
    assert signer.verify(tamper(signer.issue(now=NOW)), now=NOW) is None


def test_csrf_tokens_are_bound_to_the_session_and_the_action() -> None:
    signer = Signer.for_token(TOKEN)
    mine = signer.verify(signer.issue(now=NOW), now=NOW)
    theirs = signer.verify(signer.issue(now=NOW), now=NOW)
    assert mine is not None
    assert theirs is not None
    token = signer.csrf(mine, "/ui/endpoints/x/disable")
    assert signer.check_csrf(mine, "/ui/endpoints/x/disable", token)
    assert not signer.check_csrf(mine, "/ui/endpoints/x/enable", token)
    assert not signer.check_csrf(theirs, "/ui/endpoints/x/disable", token)
    assert not signer.check_csrf(None, "/ui/endpoints/x/disable", token)
    assert not signer.check_csrf(mine, "/ui/endpoints/x/disable", None)
    assert not signer.check_csrf(mine, "/ui/endpoints/x/disable", "é")
    other_key = Signer.for_token(TOKEN + "-rotated")
    assert not other_key.check_csrf(mine, "/ui/endpoints/x/disable", token)
