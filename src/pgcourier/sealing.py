"""Endpoint secrets and Slack tokens encrypted at rest, with ``PGCOURIER_SECRET_KEY``.

The cipher is Fernet from ``cryptography`` (AES-128-CBC with HMAC-SHA256, authenticated: a value
altered in the database, or opened with the wrong key, fails instead of yielding garbage), and
:class:`cryptography.fernet.MultiFernet` for keys: the first key encrypts, every key decrypts,
and ``rotate`` re-encrypts under the first. AES-GCM would be as sound and a little smaller, but
would need a nonce discipline and a key-id scheme of our own; Fernet has both built in, and the
relay opens each stored value once (:class:`Unsealer`), so its cost per value does not matter.

A stored value is ``enc:v1:`` + a Fernet token; anything without the prefix is plain text, so
plain and encrypted rows coexist during an upgrade (the first start with a key encrypts the
plain ones: :func:`pgcourier.secrets_at_rest.secure`).
"""

from __future__ import annotations

from collections import OrderedDict

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from pgcourier.errors import ConfigurationError

PREFIX = "enc:v1:"
#: How to make a key, for messages and the README.
GENERATE_HINT = "pgcourier keys generate"
#: The relay's cache of opened values: far more than the endpoints of any deployment (a value
#: is an endpoint's secret, previous secret or token); past it the least recently used goes.
CACHE_SIZE = 4096


class SecretUnavailable(ConfigurationError):
    """A stored secret cannot be opened: no key is configured, or none of them fits."""


def generate_key() -> str:
    """A new key for ``PGCOURIER_SECRET_KEY``: 32 random bytes, URL-safe base64."""
    return Fernet.generate_key().decode()


def key_problem(value: str) -> str | None:
    """Why ``value`` (a ``PGCOURIER_SECRET_KEY``) cannot be used, or None when it can."""
    parts = [part.strip() for part in value.split(",")]
    if not any(parts):
        return f"is set but empty: unset it, or set a key from `{GENERATE_HINT}`"
    for n, part in enumerate(parts, start=1):
        try:
            Fernet(part.encode())
        except (ValueError, TypeError):
            # Never the value itself: it is a key, and this message is logged.
            return (
                f"key {n} is not a key (32 bytes in URL-safe base64, 44 characters): "
                f"make one with `{GENERATE_HINT}`"
            )
    return None


def is_sealed(value: str) -> bool:
    """Whether a stored value is encrypted (else it is plain text, from before a key was set)."""
    return value.startswith(PREFIX)


class Keyring:
    """The configured keys: the first encrypts, all of them decrypt."""

    def __init__(self, keys: str) -> None:
        problem = key_problem(keys)
        if problem:
            raise ConfigurationError(f"PGCOURIER_SECRET_KEY {problem}")
        self._fernets = [Fernet(part.strip().encode()) for part in keys.split(",")]
        self._multi = MultiFernet(self._fernets)

    def __repr__(self) -> str:
        return f"Keyring({len(self._fernets)} keys)"  # never the keys

    def seal(self, plain: str) -> str:
        """``plain`` encrypted under the first key (already sealed values are left as they are)."""
        if is_sealed(plain):
            return plain
        return PREFIX + self._multi.encrypt(plain.encode()).decode()

    def open(self, stored: str) -> str:
        """The plain text of a stored value (plain values are returned as they are)."""
        if not is_sealed(stored):
            return stored
        try:
            return self._multi.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SecretUnavailable(
                "no key in PGCOURIER_SECRET_KEY decrypts a stored secret: "
                "set the key it was encrypted with"
            ) from None

    def under_first_key(self, stored: str) -> bool:
        """Whether a sealed value is encrypted under the first key already."""
        try:
            self._fernets[0].decrypt(stored[len(PREFIX) :].encode())
        except InvalidToken:
            return False
        return True

    def reseal(self, stored: str) -> str:
        """A stored value encrypted under the first key (plain ones are sealed)."""
        if not is_sealed(stored):
            return self.seal(stored)
        if self.under_first_key(stored):
            return stored
        self.open(stored)  # a clear error when no key fits
        return PREFIX + self._multi.rotate(stored[len(PREFIX) :].encode()).decode()


def keyring_from(keys: str | None) -> Keyring | None:
    """The keyring for a ``PGCOURIER_SECRET_KEY`` value, None when unset."""
    return Keyring(keys) if keys is not None else None


class Unsealer:
    """The relay's view of stored secrets: each distinct stored value is opened once.

    Every claimed delivery carries its endpoint's secrets as stored; decrypting them each time
    would add a Fernet decryption (tens of microseconds) to every delivery. A bounded dict from
    stored value to plain text makes that a dictionary look-up. A rotated secret is a new stored
    value (its old entry simply stops being asked for); when the cache is full the least
    recently used value goes, so a deployment with more values than it holds still keeps the
    busy ones (clearing it all at once made every endpoint pay a decryption again).
    """

    def __init__(self, keyring: Keyring | None, *, size: int = CACHE_SIZE) -> None:
        self._keyring = keyring
        self._size = size
        # Least recently used first: a hit moves its value to the end, a miss evicts the front.
        self._opened: OrderedDict[str, str] = OrderedDict()

    def open(self, stored: str) -> str:
        """The plain text of a stored value, or :class:`SecretUnavailable`."""
        if not stored.startswith(PREFIX):
            return stored
        plain = self._opened.get(stored)
        if plain is not None:
            self._opened.move_to_end(stored)
            return plain
        if self._keyring is None:
            raise SecretUnavailable(
                "endpoint secrets are stored encrypted but PGCOURIER_SECRET_KEY is not set"
            )
        plain = self._keyring.open(stored)
        if len(self._opened) >= self._size:
            self._opened.popitem(last=False)
        self._opened[stored] = plain
        return plain

    def open_optional(self, stored: str | None) -> str | None:
        return None if stored is None else self.open(stored)
