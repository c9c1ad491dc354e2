"""Hashes for credentials we must verify but never show again."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


def token_hash(token: str) -> str:
    """SHA-256 of a high-entropy random token (API keys, client secrets, access tokens).
    Such tokens cannot be guessed, so a fast hash is enough and lookups stay indexed."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(nbytes: int = 40) -> str:
    return secrets.token_urlsafe(nbytes)


def new_client_id() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(24))


# scrypt for passwords (low entropy): memory-hard, in the standard library.
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
