"""Credential hashing: SHA-256 for random tokens, scrypt for passwords."""

from __future__ import annotations

import hashlib

import pytest

from chalicelib.auth.hashing import (
    check_password,
    hash_password,
    new_client_id,
    new_token,
    token_hash,
)


def test_token_hash_is_stable_sha256():
    assert token_hash("abc") == hashlib.sha256(b"abc").hexdigest()
    assert token_hash("abc") == token_hash("abc")
    assert token_hash("abc") != token_hash("abd")
    assert len(token_hash("")) == 64


def test_new_token_is_random_and_url_safe():
    tokens = {new_token(40) for _ in range(50)}
    assert len(tokens) == 50
    for t in tokens:
        assert len(t) == 54  # 40 bytes in URL-safe base64, unpadded
        assert set(t) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_new_client_id():
    ids = {new_client_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) == 24 and i.isalnum() for i in ids)


def test_password_hash_and_check():
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$16384$8$1$")
    assert "correct horse" not in stored
    assert check_password("correct horse", stored)
    assert not check_password("correct horsE", stored)
    assert not check_password("", stored)


def test_password_hashes_are_salted():
    a, b = hash_password("same password"), hash_password("same password")
    assert a != b
    assert check_password("same password", a) and check_password("same password", b)


def test_unicode_password():
    stored = hash_password("pässwörd ✓")
    assert check_password("pässwörd ✓", stored)
    assert not check_password("passwort", stored)


@pytest.mark.parametrize(
    "stored",
    [
        None,
        "",
        "garbage",
        "scrypt$a$b$c$d$e",
        "scrypt$16384$8$1$!!!$!!!",
        "scrypt$16384$8$1$c2FsdA==",
        "md5$5f4dcc3b5aa765d61d8327deb882cf99",
    ],
)
def test_garbage_stored_value_never_matches(stored):
    assert check_password("password", stored) is False
