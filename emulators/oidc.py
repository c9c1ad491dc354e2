"""An OpenID Connect provider, as LS AAI (LifeScience Login) serves one at
`https://login.aai.lifescience-ri.eu/oidc/`: everything under `/oidc/` on one loopback
server — point LifeMonitor's `LM_LSAAI_ISSUER` at `.issuer`.

* `/oidc/.well-known/openid-configuration`: the discovery document (issuer `.issuer`);
* `/oidc/authorize`: the sign-in form of the other emulated providers (`oauth_provider.py`:
  login and password, or `auto_login`), codes single-use, PKCE checked, the `nonce` kept;
* `/oidc/token`: an access token, a refresh token and, when `openid` was asked for, an ID
  token signed RS256 (or HS256 with the client's secret: `signing_alg`) carrying `iss`,
  `sub`, `aud`, `azp`, `exp`, `iat`, `auth_time`, `nonce` and `at_hash`;
* `/oidc/userinfo` (GET or POST, Bearer): the person's claims by scope (`profile`,
  `email`), as MITREid Connect — the software behind LS AAI — gives them;
* `/oidc/jwk`: the public keys.

Switches that make it misbehave the ways a client must notice:

* `id_token_defect`, one of `DEFECTS`: a wrong `iss`, `aud`, `nonce` or `sub` (not the
  userinfo's), expired, signed by another key under the same `kid`, unsigned (`alg: none`),
  or no ID token at all;
* `discovery_down`: the discovery document answers 503;
* a person's `email_verified = False`;
* `rotate_key()`: a new signing key under a new `kid` (the JWKS lists both).

The RSA keys are made with `cryptography` on first use, imported here only: the rest of the
package stays standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from emulators.base import Emulator, Reply, Request
from emulators.oauth_provider import OAuthApp, OAuthProviderMixin

DEFAULT_PASSWORD = "lsaai-emulator"  # noqa: S105 - the emulated people's password
DEFECTS = ("iss", "aud", "nonce", "sub", "expired", "signature", "none", "missing")
ID_TOKEN_TTL = 300

PREFIX = "/oidc"
DISCOVERY_PATH = f"{PREFIX}/.well-known/openid-configuration"
AUTHORIZE_PATH = f"{PREFIX}/authorize"
TOKEN_PATH = f"{PREFIX}/token"
USERINFO_PATH = f"{PREFIX}/userinfo"
JWKS_PATH = f"{PREFIX}/jwk"


@dataclass
class OIDCUser:
    sub: str
    login: str  # what the person types in the sign-in form
    preferred_username: str | None
    name: str | None
    given_name: str | None
    family_name: str | None
    email: str | None
    email_verified: bool = True
    password: str = DEFAULT_PASSWORD


def _default_users() -> dict[str, OIDCUser]:
    users = [
        OIDCUser(
            sub="5a1d3c0b9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b@lifescience-ri.eu",
            login="jdoe",
            preferred_username="jdoe",
            name="Jane Doe",
            given_name="Jane",
            family_name="Doe",
            email="jane.doe@uni.example",
        ),
        OIDCUser(
            sub="0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e@lifescience-ri.eu",
            login="sam",
            preferred_username=None,  # LS AAI gives it only when the person chose one
            name=None,
            given_name="Sam",
            family_name="Smith",
            email="sam.smith@lab.example",
        ),
    ]
    return {u.sub: u for u in users}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


_key_lock = threading.Lock()


def _new_rsa_key():
    """A fresh 2048-bit RSA private key (cryptography, imported here only)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _rs256(key, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _jwk(key, kid: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": kid,
        "n": b64url(_int_bytes(numbers.n)),
        "e": b64url(_int_bytes(numbers.e)),
    }


def encode_jwt(claims: dict[str, Any], *, alg: str, key=None, kid: str | None = None) -> str:
    """A compact JWS: RS256 with an RSA private key, HS256 with a secret (`key`, str), or
    unsigned (`none`)."""
    header: dict[str, str] = {"alg": alg, "typ": "JWT"}
    if kid and alg == "RS256":
        header["kid"] = kid
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    ).encode()
    if alg == "RS256":
        signature = _rs256(key, signing_input)
    elif alg == "HS256":
        signature = hmac.new(str(key).encode(), signing_input, hashlib.sha256).digest()
    elif alg == "none":
        signature = b""
    else:
        raise ValueError(f"unsupported alg {alg!r}")
    return signing_input.decode() + "." + b64url(signature)


def at_hash(access_token: str) -> str:
    """OpenID Connect Core 3.1.3.6: the left half of the token's SHA-256, base64url."""
    return b64url(hashlib.sha256(access_token.encode()).digest()[:16])


class OIDCEmulator(OAuthProviderMixin, Emulator):
    def __init__(self, latency: float = 0.0) -> None:
        self.tokens: dict[str, str] = {}
        self.users: dict[str, OIDCUser] = _default_users()
        self.oauth_title = "LifeScience Login"
        self.id_token_defect: str | None = None
        self.signing_alg = "RS256"
        self.discovery_down = False
        self._keys: list[tuple[str, Any]] = []  # (kid, private key), newest last
        self._other_key = None
        self.id_tokens: list[str] = []  # every ID token issued (tests look for leaks)
        self.reset_oauth()
        super().__init__(latency)

    def reset(self) -> None:
        """Back to a fresh provider (the signing keys stay: making them is slow)."""
        self.tokens.clear()
        self.users = _default_users()
        self.id_token_defect = None
        self.signing_alg = "RS256"
        self.discovery_down = False
        self.id_tokens.clear()
        self.reset_oauth()
        self.clear_faults()
        with self._lock:
            self.requests.clear()

    @property
    def issuer(self) -> str:
        return f"{self.url}{PREFIX}/"

    def setup_routes(self) -> None:
        self.setup_oauth_routes(AUTHORIZE_PATH, TOKEN_PATH)
        self.route("GET", DISCOVERY_PATH, self._discovery)
        self.route("GET", USERINFO_PATH, self._userinfo)
        self.route("POST", USERINFO_PATH, self._userinfo)
        self.route("GET", JWKS_PATH, self._jwks)

    # -- keys ------------------------------------------------------------------------------
    def _signing_key(self) -> tuple[str, Any]:
        with _key_lock:
            if not self._keys:
                self._keys.append((secrets.token_hex(8), _new_rsa_key()))
            return self._keys[-1]

    def _impostor_key(self):
        """Another key, to sign under the real key's `kid` (a bad signature)."""
        with _key_lock:
            if self._other_key is None:
                self._other_key = _new_rsa_key()
            return self._other_key

    def rotate_key(self) -> str:
        """Sign with a new key from now on (the JWKS lists the old and the new); its kid."""
        self._signing_key()
        kid = secrets.token_hex(8)
        with _key_lock:
            self._keys.append((kid, _new_rsa_key()))
        return kid

    # -- routes ----------------------------------------------------------------------------
    def _discovery(self, req: Request) -> Reply:
        if self.discovery_down:
            return Reply(503, "Service Unavailable")
        return Reply(
            200,
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.url}{AUTHORIZE_PATH}",
                "token_endpoint": f"{self.url}{TOKEN_PATH}",
                "userinfo_endpoint": f"{self.url}{USERINFO_PATH}",
                "jwks_uri": f"{self.url}{JWKS_PATH}",
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "HS256"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "code_challenge_methods_supported": ["plain", "S256"],
                "claims_supported": [
                    "sub",
                    "name",
                    "preferred_username",
                    "given_name",
                    "family_name",
                    "email",
                    "email_verified",
                ],
            },
        )

    def _jwks(self, req: Request) -> Reply:
        self._signing_key()
        with _key_lock:
            keys = [_jwk(key, kid) for kid, key in self._keys]
        return Reply(200, {"keys": keys})

    def oauth_authenticate(self, login: str, password: str) -> str | None:
        for sub, user in self.users.items():
            if login and login in {user.login, user.email}:
                return sub if secrets.compare_digest(password, user.password) else None
        return None

    def token_extras(
        self, app: OAuthApp, person: str, scope: str, nonce: str | None, access_token: str
    ) -> dict:
        defect = self.id_token_defect
        if "openid" not in scope.split() or defect == "missing":
            return {}
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": "https://impostor.example/oidc/" if defect == "iss" else self.issuer,
            "sub": "someone-else@lifescience-ri.eu" if defect == "sub" else person,
            "aud": "another-client" if defect == "aud" else app.client_id,
            # Still naming us as the authorized party: only the `aud` check can refuse it.
            "azp": app.client_id,
            "iat": now - 7200 if defect == "expired" else now,
            "exp": now - 3600 if defect == "expired" else now + ID_TOKEN_TTL,
            "auth_time": now,
            "at_hash": at_hash(access_token),
        }
        if nonce is not None:
            claims["nonce"] = "a-replayed-nonce" if defect == "nonce" else nonce
        if defect == "none":
            id_token = encode_jwt(claims, alg="none")
        elif self.signing_alg == "HS256":
            id_token = encode_jwt(claims, alg="HS256", key=app.client_secret)
        else:
            kid, key = self._signing_key()
            if defect == "signature":
                key = self._impostor_key()
            id_token = encode_jwt(claims, alg="RS256", key=key, kid=kid)
        self.id_tokens.append(id_token)
        return {"id_token": id_token}

    def _userinfo(self, req: Request) -> Reply:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        token = token.strip()
        person = self.tokens.get(token) if scheme.lower() == "bearer" else None
        if person is None or not self.access_token_valid(token):
            return Reply(401, "", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        user = self.users.get(person)
        if user is None:
            return Reply(401, "", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        granted = set(self.access_scope(token).split())
        claims: dict[str, Any] = {"sub": user.sub}
        if "profile" in granted:
            claims.update(
                name=user.name,
                given_name=user.given_name,
                family_name=user.family_name,
                preferred_username=user.preferred_username,
            )
        if "email" in granted:
            claims.update(email=user.email, email_verified=user.email_verified)
        return Reply(200, {k: v for k, v in claims.items() if v is not None})
