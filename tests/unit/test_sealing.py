"""Secrets at rest, without a database: the cipher, the key rules, the relay's cache."""

from __future__ import annotations

import pytest

from pgcourier.errors import ConfigurationError
from pgcourier.sealing import (
    PREFIX,
    Keyring,
    SecretUnavailable,
    Unsealer,
    generate_key,
    is_sealed,
    key_problem,
)
from pgcourier.settings import load_settings

SECRET = "whsec_c2VjcmV0LW9uZS1zZWNyZXQtb25lLXNlY3JldC1vbmU="


def test_round_trip_and_plain_values_pass() -> None:
    keyring = Keyring(generate_key())
    sealed = keyring.seal(SECRET)
    assert sealed.startswith(PREFIX)
    assert is_sealed(sealed)
    assert SECRET not in sealed
    assert SECRET.removeprefix("whsec_") not in sealed
    assert keyring.open(sealed) == SECRET
    assert keyring.seal(sealed) == sealed  # sealing twice is a no-op
    assert keyring.open(SECRET) == SECRET  # plain rows from before a key was set
    # Authenticated: a changed byte is refused, never decrypted into something else.
    tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(SecretUnavailable):
        keyring.open(tampered)


def test_the_first_key_encrypts_every_key_decrypts_and_reseal_moves_to_the_first() -> None:
    old, new = generate_key(), generate_key()
    under_old = Keyring(old).seal(SECRET)
    both = Keyring(f"{new},{old}")
    assert both.open(under_old) == SECRET
    assert not both.under_first_key(under_old)
    moved = both.reseal(under_old)
    assert moved != under_old
    assert both.under_first_key(moved)
    assert Keyring(new).open(moved) == SECRET
    assert both.reseal(moved) == moved  # already under the first key: left alone
    with pytest.raises(SecretUnavailable, match="no key in PGCOURIER_SECRET_KEY") as caught:
        Keyring(old).open(moved)
    assert SECRET not in str(caught.value)


def test_key_rules_name_the_variable_and_never_echo_a_key() -> None:
    assert key_problem(generate_key()) is None
    assert key_problem(f"{generate_key()}, {generate_key()}") is None
    assert "empty" in (key_problem(" ") or "")
    not_a_key = "hunter2-hunter2-hunter2"
    problem = key_problem(f"{generate_key()},{not_a_key}") or ""
    assert "key 2 is not a key" in problem
    assert "pgcourier keys generate" in problem
    assert not_a_key not in problem
    with pytest.raises(ConfigurationError, match="PGCOURIER_SECRET_KEY: key 1") as caught:
        load_settings(secret_key=not_a_key)
    assert not_a_key not in str(caught.value)
    assert load_settings().keyring is None
    assert load_settings(secret_key=generate_key()).keyring is not None
    assert repr(Keyring(f"{generate_key()},{generate_key()}")) == "Keyring(2 keys)"


class CountingKeyring(Keyring):
    opened = 0

    def open(self, stored: str) -> str:
        self.opened += 1
        return super().open(stored)


def test_the_relay_opens_each_stored_value_once_within_a_bounded_cache() -> None:
    keyring = CountingKeyring(generate_key())
    sealed = [keyring.seal(f"{SECRET}{i}") for i in range(3)]
    unsealer = Unsealer(keyring, size=2)
    for _ in range(100):
        assert unsealer.open(sealed[0]) == f"{SECRET}0"
    assert keyring.opened == 1
    unsealer.open(sealed[1])
    unsealer.open(sealed[2])  # past the bound: the least recently used goes
    assert keyring.opened == 3
    assert len(unsealer._opened) <= 2
    assert unsealer.open(SECRET) == SECRET
    assert unsealer.open_optional(None) is None
    with pytest.raises(SecretUnavailable, match="PGCOURIER_SECRET_KEY is not set"):
        Unsealer(None).open(sealed[0])


def test_the_cache_forgets_the_least_recently_used_value_not_everything() -> None:
    keyring = CountingKeyring(generate_key())
    a, b, c = (keyring.seal(f"{SECRET}{i}") for i in range(3))
    unsealer = Unsealer(keyring, size=2)
    unsealer.open(a)
    unsealer.open(b)
    unsealer.open(a)  # a is now the most recently used
    unsealer.open(c)  # full: b goes, a stays
    assert keyring.opened == 3
    assert unsealer.open(a) == f"{SECRET}0"
    assert unsealer.open(c) == f"{SECRET}2"
    assert keyring.opened == 3  # both answered from the cache
    assert unsealer.open(b) == f"{SECRET}1"
    assert keyring.opened == 4  # b was evicted and opened again
    assert len(unsealer._opened) == 2
