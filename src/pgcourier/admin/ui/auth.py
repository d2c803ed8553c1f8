"""Console sessions and CSRF tokens: stateless, signed, keyed by the admin token.

A session is a cookie ``EXPIRES.NONCE.MAC``. With an admin token, the MAC key is derived from
it (HMAC-SHA256 of a fixed label under the token), so every admin server of a deployment accepts
the others' cookies and rotating the token logs everyone out; nothing is stored anywhere.
Without a token (loopback only, as the API) nobody logs in: the console hands out a session
signed with a random per-process key, used only to bind CSRF tokens.

A CSRF token is the MAC of the session's nonce and the form's action path: a page on another
site can neither read it nor (SameSite=Strict) make the browser send the cookie, and a token
taken from one form cannot be posted to another action.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

SESSION_COOKIE = "pgcourier_console"
SESSION_SECONDS = 12 * 3600
CSRF_FIELD = "csrf_token"
_LABEL = b"pgcourier console session key v1"


@dataclass(frozen=True)
class Session:
    """A verified session: its nonce (what CSRF tokens are bound to) and expiry (epoch s)."""

    nonce: str
    expires: int


class Signer:
    """Issues and checks session cookies and CSRF tokens under one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def for_token(cls, token: str | None) -> Signer:
        """The deployment's signer: derived from the admin token, or random for this process
        when there is none (such sessions end when the process does, which costs nothing: they
        carry no login)."""
        if token is None:
            return cls(secrets.token_bytes(32))
        return cls(hmac.new(token.encode(), _LABEL, hashlib.sha256).digest())

    def _mac(self, purpose: str, message: str) -> str:
        data = f"{purpose}\x00{message}".encode()
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def issue(self, *, now: float | None = None, lifetime: int = SESSION_SECONDS) -> str:
        """A new session cookie value, valid for ``lifetime`` seconds."""
        expires = int((time.time() if now is None else now) + lifetime)
        payload = f"{expires}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._mac('session', payload)}"

    def verify(self, value: str | None, *, now: float | None = None) -> Session | None:
        """The session in a cookie value, or None if it is missing, forged or expired."""
        if not value or not value.isascii():
            return None
        payload, _, mac = value.rpartition(".")
        expires_text, _, nonce = payload.partition(".")
        if not expires_text.isdigit() or not nonce:
            return None
        if not hmac.compare_digest(mac, self._mac("session", payload)):
            return None
        expires = int(expires_text)
        if expires <= (time.time() if now is None else now):
            return None
        return Session(nonce, expires)

    def csrf(self, session: Session, action: str) -> str:
        """The CSRF token a form posting to ``action`` (a path) carries in this session."""
        return self._mac("csrf", f"{session.nonce}\x00{action}")

    def check_csrf(self, session: Session | None, action: str, offered: str | None) -> bool:
        """Whether ``offered`` is this session's token for ``action``."""
        if session is None or not offered or not offered.isascii():
            return False
        return hmac.compare_digest(offered, self.csrf(session, action))
