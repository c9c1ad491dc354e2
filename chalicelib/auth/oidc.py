"""OpenID Connect, for the login providers that speak it (LS AAI): the provider's discovery
document, its published keys, and the checks of an ID token. Both documents are fetched with
a timeout and reused for an hour; keys are fetched again when a token names one we do not
know yet (providers rotate them). What fails is a `ProviderError`: a page naming the
provider, never a 500, and no token in the log."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.auth.providers import ProviderError
from chalicelib.config import get_settings

if TYPE_CHECKING:
    from chalicelib.auth.providers import Provider

log = logging.getLogger(__name__)

#: How long a discovery document and a key set are reused.
DISCOVERY_TTL = 3600.0
#: Seconds of clock skew allowed on an ID token's `exp` and `iat` (authlib's default).
ID_TOKEN_LEEWAY = 120
#: ID token signatures we accept, when the provider lists them: never `none`; HS* are
#: checked with our client secret, the others with the provider's published keys.
ID_TOKEN_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
    | {"HS256", "HS384", "HS512"}
)

_lock = threading.Lock()


@dataclass(frozen=True)
class Discovery:
    """What we use of an OpenID Connect provider's discovery document."""

    issuer: str  # exactly as published: the ID token's `iss` must equal it
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str
    algorithms: tuple[str, ...]  # ID token signatures it uses, that we accept


_discoveries: dict[str, tuple[float, Discovery]] = {}
_key_sets: dict[str, tuple[float, dict]] = {}  # jwks_uri -> (fetched, the JWKS document)


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def _unavailable(provider: Provider, reason: str) -> ProviderError:
    # The reason is for the log (a status, a missing field), never a token; the person sees
    # what a provider that is down shows.
    log.warning("login provider %s: discovery failed: %s", provider.name, reason)
    return ProviderError(
        f"{provider.label} is not available right now; try again later",
        provider=provider.name,
        status=503,
    )


def _parse_discovery(provider: Provider, doc: Any) -> Discovery:
    if not isinstance(doc, dict):
        raise _unavailable(provider, "the discovery document is not a JSON object")
    fields = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
    for name in ("issuer", *fields):
        value = doc.get(name)
        if not isinstance(value, str) or not value.startswith(("https://", "http://")):
            raise _unavailable(provider, f"no valid {name} in the discovery document")
    # OpenID Connect Discovery 4.3: the document must be the configured issuer's (a
    # provider must not speak for another); a trailing slash is not a difference.
    if doc["issuer"].rstrip("/") != (provider.issuer or "").rstrip("/"):
        raise _unavailable(provider, "the discovery document names another issuer")
    listed = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = tuple(a for a in listed if isinstance(a, str) and a in ID_TOKEN_ALGS)
    if not algorithms:
        raise _unavailable(provider, "no ID token signature algorithm we accept")
    return Discovery(
        issuer=doc["issuer"],
        algorithms=algorithms,
        **{name: doc[name] for name in fields},
    )


def _fetch_document(url: str, timeout: tuple[float, float]) -> Any:
    """A small JSON document of the provider's: no retry, no redirect (a redirect could take
    us anywhere), at most 256 KB. OutboundError when it cannot be had, with the reason."""
    from chalicelib import http

    response = http.get(
        url,
        timeout=timeout,
        retries=0,
        max_bytes=256 * 1024,
        allow_redirects=False,
        headers={"Accept": "application/json"},
    )
    if response.status != 200:
        raise http.OutboundError(f"HTTP {response.status}", status=response.status)
    return response.json()


def discover(
    provider: Provider,
    *,
    max_age: float = DISCOVERY_TTL,
    timeout: tuple[float, float] | None = None,
) -> Discovery:
    """The provider's discovery document, fetched (with a timeout) or reused for
    `max_age` seconds. A provider whose discovery fails is unavailable: ProviderError 503."""
    from chalicelib import http

    url = discovery_url(provider.issuer or "")
    with _lock:
        cached = _discoveries.get(url)
    if cached is not None and time.monotonic() - cached[0] < max_age:
        return cached[1]
    try:
        doc = _fetch_document(url, timeout or (get_settings().provider_timeout,) * 2)
    except http.OutboundError as exc:
        raise _unavailable(provider, exc.reason) from None
    found = _parse_discovery(provider, doc)
    with _lock:
        _discoveries[url] = (time.monotonic(), found)
    return found


def _jwks(provider: Provider, found: Discovery, *, force: bool = False) -> dict:
    """The provider's public keys (its JWKS), reused as the discovery document is, fetched
    again when `force` (a token signed with a key we do not know yet: keys rotate)."""
    from chalicelib import http

    with _lock:
        cached = _key_sets.get(found.jwks_uri)
    if cached is not None and not force and time.monotonic() - cached[0] < DISCOVERY_TTL:
        return cached[1]
    try:
        doc = _fetch_document(found.jwks_uri, (get_settings().provider_timeout,) * 2)
    except http.OutboundError as exc:
        log.warning("login provider %s: its keys cannot be read: %s", provider.name, exc.reason)
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ProviderError(
            f"{provider.label} did not answer as expected; try again later",
            provider=provider.name,
            status=502,
        )
    with _lock:
        _key_sets[found.jwks_uri] = (time.monotonic(), doc)
    return doc


def id_token_refused(provider: Provider, why: str) -> ProviderError:
    log.warning("login provider %s: ID token refused: %s", provider.name, why)
    return ProviderError(
        f"{provider.label} sent a sign-in that cannot be verified; please sign in again",
        provider=provider.name,
        status=502,
    )


def verify_id_token(
    provider: Provider, found: Discovery, token: dict[str, Any], nonce: str, secret: str
) -> dict[str, Any]:
    """The claims of the token response's ID token, once verified: its signature (the
    provider's keys; HS* with our client secret), `iss` (the discovered issuer), `aud` (our
    client id; `azp` when there are others), `exp` and `iat` (with leeway), `nonce` (ours)
    and `at_hash` when present. Anything else is a ProviderError."""
    from authlib.oidc.core import CodeIDToken
    from joserfc import jwt
    from joserfc.errors import ClaimError, InvalidKeyIdError, JoseError
    from joserfc.jwk import KeySet, OctKey
    from joserfc.jws import JWSRegistry

    raw = token.get("id_token")
    if not isinstance(raw, str) or not raw:
        raise id_token_refused(provider, "the token response has none")
    if not nonce:
        # authlib checks the nonce only when one is expected: we always expect one.
        raise id_token_refused(provider, "no nonce to compare")
    registry = JWSRegistry(algorithms=list(found.algorithms), strict_check_header=False)

    def decode(jwks: dict):
        keys = KeySet.import_key_set(jwks)

        def key_for(guest):
            # A shared-secret signature is checked with our secret, never with a public key
            # (the algorithm confusion attack), and the others with the provider's keys.
            if str(guest.headers().get("alg", "")).startswith("HS"):
                return OctKey.import_key(secret)
            return keys

        return jwt.decode(raw, key_for, registry=registry)

    try:
        try:
            decoded = decode(_jwks(provider, found))
        except InvalidKeyIdError:
            decoded = decode(_jwks(provider, found, force=True))
        claims = CodeIDToken(
            decoded.claims,
            decoded.header,
            options={
                "iss": {"essential": True, "value": found.issuer},
                "aud": {"essential": True, "value": provider.client_id},
                "sub": {"essential": True},
            },
            params={
                "nonce": nonce,
                "client_id": provider.client_id,
                "access_token": token.get("access_token"),
            },
        )
        claims.validate(leeway=ID_TOKEN_LEEWAY)
    except ClaimError as exc:
        raise id_token_refused(provider, f"{type(exc).__name__} ({exc.claim})") from None
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise id_token_refused(provider, type(exc).__name__) from None
    return dict(claims)


def reset() -> None:
    """Forget every discovery document and key set."""
    with _lock:
        _discoveries.clear()
        _key_sets.clear()
