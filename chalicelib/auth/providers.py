"""Login providers (authlib's OAuth2 client): every registered WorkflowHub, GitHub, and
LS AAI (LifeScience Login, OpenID Connect).

A person signs in at a provider; we get their identity there (`ProviderIdentity`) and the
provider's tokens, which we keep encrypted (Fernet, key in the parameter store) with the
identity and refresh when they expire. Each flow carries `state` and PKCE (S256), and an
OpenID Connect flow a `nonce`; the pieces a flow needs between its two requests
(`LoginState`) live in the signed session.

An OpenID Connect provider (kind "oidc") is configured by its issuer alone: its endpoints
come from the issuer's discovery document, and its ID token is verified (signature against
the issuer's JWKS, `iss`, `aud`, `exp`/`iat`, `nonce`) before its userinfo is believed;
`chalicelib/auth/oidc.py` does both.

Nothing here knows about Chalice: `web/oauth.py` turns these calls into pages.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from chalicelib.config import get_settings
from chalicelib.errors import LifeMonitorError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from chalicelib.models import Identity, Registry

log = logging.getLogger(__name__)

GITHUB = "github"
GITHUB_SECRET_KEY = "oauth2/providers/github/client_secret"  # noqa: S105 - a key name
LSAAI = "lsaai"
#: Names a registry's client name may not take (our login URLs name providers by them).
BUILT_IN_PROVIDERS = frozenset({GITHUB, LSAAI})
LSAAI_SECRET_KEY = "oauth2/providers/lsaai/client_secret"  # noqa: S105 - a key name
#: How the built-in providers are named to people (registries use their own name).
LABELS = {GITHUB: "GitHub", LSAAI: "LifeScience Login"}
TOKENS_KEY_NAME = "oauth2/identity_tokens_key"
#: Scopes asked of WorkflowHub (read its people and workflows as the person).
SEEK_SCOPE = "read"
GITHUB_SCOPE = "read:user user:email"
OIDC_SCOPE = "openid profile email"
#: A login flow's state is good for this long (the person signs in at the provider).
LOGIN_STATE_TTL = 900
#: How long a probe's verdict (provider up or down) is reused.
PROBE_TTL = 60.0


class ProviderError(LifeMonitorError):
    """A provider is down, refused, or answered something we cannot use. Shown to the
    person as a page naming the provider; never a 500."""

    status = 502
    title = "Login provider error"

    def __init__(self, detail: str, *, provider: str | None = None, status: int = 502) -> None:
        super().__init__(detail)
        self.provider = provider
        self.status = status


@dataclass(frozen=True)
class Provider:
    name: str  # in our URLs: "github", or a registry's identifier
    label: str  # shown on buttons: "GitHub", the registry's name
    kind: str  # "github" | "seek" | "oidc"
    client_id: str
    secret_key: str  # where the client secret is in the parameter store
    authorize_url: str
    token_url: str
    userinfo_url: str
    api_base_url: str  # probed to tell whether the provider is up
    scope: str
    registry_id: int | None = None
    registry_uuid: str | None = None
    available: bool = True
    profile_url: str | None = None  # the provider's page for a person (format with id)
    # OpenID Connect: the configured issuer; the three URLs above are filled from its
    # discovery document (`resolve_endpoints`).
    issuer: str | None = None

    @property
    def login_url(self) -> str:
        """Our page that starts a login with this provider (path with our base path)."""
        base = urlsplit(get_settings().external_server_url).path.rstrip("/")
        return f"{base}/oauth2/login/{self.name}"

    @property
    def callback_url(self) -> str:
        return get_settings().url_for(f"oauth2/authorized/{self.name}")

    def client_secret(self) -> str | None:
        from chalicelib.secrets import get_secrets

        return get_secrets().get(self.secret_key)


@dataclass(frozen=True)
class ProviderIdentity:
    """Who the person is at the provider."""

    provider: str
    provider_user_id: str
    username: str | None  # a proposal for our username
    name: str | None
    email: str | None
    user_info: dict[str, Any]
    token: dict[str, Any]  # the provider's token response (kept encrypted)
    registry_id: int | None = None


@dataclass
class LoginState:
    """What a login flow keeps in the session between `/oauth2/login` and the callback."""

    provider: str
    state: str
    code_verifier: str
    next: str | None
    created: float = field(default_factory=time.time)
    nonce: str | None = None  # OpenID Connect: must come back in the ID token

    def as_dict(self) -> dict:
        return {
            "provider": self.provider,
            "state": self.state,
            "code_verifier": self.code_verifier,
            "next": self.next,
            "created": self.created,
            "nonce": self.nonce,
        }

    @classmethod
    def from_dict(cls, data: Any) -> LoginState | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                provider=str(data["provider"]),
                state=str(data["state"]),
                code_verifier=str(data["code_verifier"]),
                next=data.get("next"),
                created=float(data["created"]),
                nonce=str(data["nonce"]) if data.get("nonce") else None,
            )
        except (KeyError, TypeError, ValueError):
            return None


# --- the providers ----------------------------------------------------------------------------


def _seek_provider(registry: Registry) -> Provider:
    base = registry.uri.rstrip("/")
    return Provider(
        name=registry.client_name,
        label=registry.name,
        kind="seek",
        client_id=registry.server_client_id,
        secret_key=registry.server_secret_key,
        authorize_url=f"{base}/oauth/authorize",
        token_url=f"{base}/oauth/token",
        userinfo_url=f"{base}/people/current?format=json",
        api_base_url=base,
        scope=SEEK_SCOPE,
        registry_id=registry.id,
        registry_uuid=registry.uuid,
        profile_url=f"{base}/people/{{id}}",
    )


def _github_provider() -> Provider | None:
    settings = get_settings()
    if not settings.github_client_id:
        return None
    return Provider(
        name=GITHUB,
        label="GitHub",
        kind="github",
        client_id=settings.github_client_id,
        secret_key=GITHUB_SECRET_KEY,
        authorize_url=f"{settings.github_url}/login/oauth/authorize",
        token_url=f"{settings.github_url}/login/oauth/access_token",
        userinfo_url=f"{settings.github_api_url}/user",
        api_base_url=settings.github_api_url,
        scope=GITHUB_SCOPE,
        profile_url=f"{settings.github_url}/{{login}}",
    )


def _lsaai_provider() -> Provider | None:
    settings = get_settings()
    if not settings.lsaai_client_id:
        return None
    return Provider(
        name=LSAAI,
        label=LABELS[LSAAI],
        kind="oidc",
        client_id=settings.lsaai_client_id,
        secret_key=LSAAI_SECRET_KEY,
        # Known only from the discovery document, fetched when needed (resolve_endpoints).
        authorize_url="",
        token_url="",
        userinfo_url="",
        api_base_url=settings.lsaai_issuer,
        scope=OIDC_SCOPE,
        issuer=settings.lsaai_issuer,
    )


def _all(session: Session) -> list[Provider]:
    from chalicelib.models import Registry

    providers = [
        _seek_provider(r)
        for r in session.query(Registry).order_by(Registry.name)
        if r.type == "seek"
    ]
    for builtin in (_github_provider(), _lsaai_provider()):
        if builtin is not None:
            providers.append(builtin)
    return providers


def get_provider(session: Session, name: str) -> Provider:
    """The provider named `name` (404 if there is none)."""
    from chalicelib.errors import NotFoundError

    for provider in _all(session):
        if provider.name == name:
            return provider
    raise NotFoundError(f"There is no login provider named {name!r}")


_probes: dict[str, tuple[float, bool]] = {}
_probe_lock = threading.Lock()


def _probe_timeout() -> tuple[float, float]:
    return (min(3, get_settings().provider_timeout),) * 2


def _probe(provider: Provider) -> bool:
    """Is the provider up? A GET on its base URL answering below 500 (an OpenID Connect
    provider: its discovery document, valid), remembered for a minute so the login page
    stays fast."""
    now = time.monotonic()
    with _probe_lock:
        cached = _probes.get(provider.api_base_url)
    if cached is not None and now - cached[0] < PROBE_TTL:
        return cached[1]
    from chalicelib import http

    if provider.kind == "oidc":
        try:
            from chalicelib.auth import oidc

            oidc.discover(provider, max_age=PROBE_TTL, timeout=_probe_timeout())
            up = True
        except ProviderError:
            up = False
    else:
        try:
            response = http.get(
                provider.api_base_url,
                timeout=_probe_timeout(),
                retries=0,
                max_bytes=64 * 1024,
                allow_redirects=False,
            )
            up = response.status < 500
        except http.OutboundError:
            up = False
    with _probe_lock:
        _probes[provider.api_base_url] = (time.monotonic(), up)
    return up


def reset_probes() -> None:
    """Forget every probe's verdict, discovery document and key set."""
    from chalicelib.auth import oidc

    with _probe_lock:
        _probes.clear()
    oidc.reset()


def resolve_endpoints(provider: Provider) -> Provider:
    """The provider with its authorization, token and userinfo URLs (an OpenID Connect
    provider's from its discovery document; the others have them already)."""
    from dataclasses import replace

    if provider.kind != "oidc":
        return provider
    from chalicelib.auth import oidc

    found = oidc.discover(provider)
    return replace(
        provider,
        authorize_url=found.authorization_endpoint,
        token_url=found.token_endpoint,
        userinfo_url=found.userinfo_endpoint,
    )


def list_providers(session: Session, *, probe: bool = True) -> list[Provider]:
    """Every login provider, with `.available`: configured (its secret is in the parameter
    store) and, with `probe`, answering. The probes run in parallel."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    providers = _all(session)
    configured = [bool(p.client_id and p.client_secret()) for p in providers]
    up = configured
    if probe and any(configured):
        with ThreadPoolExecutor(max_workers=min(8, len(providers))) as pool:
            results = list(
                pool.map(_probe, [p for p, c in zip(providers, configured, strict=True) if c])
            )
        it = iter(results)
        up = [c and next(it) for c in configured]
    return [replace(p, available=bool(a)) for p, a in zip(providers, up, strict=True)]


# --- the OAuth2 client ------------------------------------------------------------------------


def _oauth_session(provider: Provider, **kwargs: Any):
    """authlib's requests client on our guarded connection pool (the SSRF guard applies;
    no proxies from the environment)."""
    from authlib.integrations.requests_client import OAuth2Session

    from chalicelib import http

    secret = provider.client_secret()
    if not secret:
        raise ProviderError(
            f"{provider.label} login is not configured (no client secret)",
            provider=provider.name,
            status=503,
        )
    client = OAuth2Session(
        client_id=provider.client_id,
        client_secret=secret,
        scope=provider.scope,
        redirect_uri=provider.callback_url,
        token_endpoint_auth_method="client_secret_post",  # noqa: S106 - a method name
        code_challenge_method="S256",
        **kwargs,
    )
    client.trust_env = False
    guarded = http.get_session()
    for prefix in ("http://", "https://"):
        client.mount(prefix, guarded.adapters[prefix])
    client.headers["User-Agent"] = guarded.headers.get("User-Agent", "LifeMonitor")
    return client


def check_available(provider: Provider) -> Provider:
    """The provider with `.available` from its configuration and a probe."""
    from dataclasses import replace

    ok = bool(provider.client_id and provider.client_secret()) and _probe(provider)
    return replace(provider, available=ok)


def begin_login(provider: Provider, next_url: str | None = None) -> tuple[str, LoginState]:
    """The provider's authorization URL to send the browser to, and the flow's state."""
    from authlib.common.security import generate_token

    if not provider.available:
        raise ProviderError(
            f"{provider.label} is not available right now; try again later",
            provider=provider.name,
            status=503,
        )
    provider = resolve_endpoints(provider)
    state = LoginState(
        provider=provider.name,
        state=secrets.token_urlsafe(24),
        code_verifier=generate_token(64),
        next=next_url,
        nonce=secrets.token_urlsafe(24) if provider.kind == "oidc" else None,
    )
    extra = {"nonce": state.nonce} if state.nonce else {}
    client = _oauth_session(provider)
    url, _ = client.create_authorization_url(
        provider.authorize_url, state=state.state, code_verifier=state.code_verifier, **extra
    )
    return url, state


def _request_error(provider: Provider, exc: Exception) -> ProviderError:
    log.warning("login provider %s failed: %s", provider.name, type(exc).__name__)
    return ProviderError(
        f"{provider.label} did not answer as expected; try again later",
        provider=provider.name,
        status=502,
    )


def complete_login(provider: Provider, state: LoginState | None, query: dict[str, str]):
    """The callback: check `state`, exchange the code (with the PKCE verifier), read who
    the person is. Every failure is a ProviderError with a message for the person."""
    import requests
    from authlib.common.errors import AuthlibBaseError

    if query.get("error"):
        denied = query.get("error") == "access_denied"
        raise ProviderError(
            f"{provider.label} did not sign you in"
            + (": access was denied" if denied else f" ({query['error'][:64]})"),
            provider=provider.name,
            status=403 if denied else 502,
        )
    if (
        state is None
        or state.provider != provider.name
        or not secrets.compare_digest(state.state, query.get("state") or "")
        or time.time() - state.created > LOGIN_STATE_TTL
    ):
        raise ProviderError(
            "This sign-in link is invalid or has expired (it must be used in the browser "
            "that started the sign-in, within 15 minutes); please sign in again",
            provider=provider.name,
            status=400,
        )
    code = query.get("code")
    if not code:
        raise ProviderError(
            f"{provider.label} sent no authorization code", provider=provider.name, status=502
        )
    if provider.kind == "oidc" and not state.nonce:
        raise ProviderError(
            "This sign-in link is invalid or has expired; please sign in again",
            provider=provider.name,
            status=400,
        )
    timeout = get_settings().provider_timeout
    provider = resolve_endpoints(provider)
    client = _oauth_session(provider, state=state.state)
    try:
        token = client.fetch_token(
            provider.token_url,
            code=code,
            code_verifier=state.code_verifier,
            timeout=timeout,
            allow_redirects=False,
        )
        if provider.kind == "oidc":
            return _oidc_identity(provider, client, dict(token), timeout, state.nonce or "")
        return _identity(provider, client, dict(token), timeout)
    except ProviderError:
        raise
    except (requests.RequestException, AuthlibBaseError, ValueError, KeyError, TypeError) as exc:
        raise _request_error(provider, exc) from None


def _get_json(client, url: str, timeout: int, provider: Provider) -> Any:
    response = client.get(
        url, timeout=timeout, allow_redirects=False, headers={"Accept": "application/json"}
    )
    if response.status_code != 200:
        raise ProviderError(
            f"{provider.label} refused to tell who you are (HTTP {response.status_code})",
            provider=provider.name,
            status=502,
        )
    return response.json()


def _identity(provider: Provider, client, token: dict, timeout: int) -> ProviderIdentity:
    info = _get_json(client, provider.userinfo_url, timeout, provider)
    if provider.kind == "seek":
        data = info["data"]
        attributes = data.get("attributes") or {}
        name = attributes.get("title") or " ".join(
            x for x in (attributes.get("first_name"), attributes.get("last_name")) if x
        )
        return ProviderIdentity(
            provider=provider.name,
            provider_user_id=str(data["id"]),
            username=attributes.get("login") or name or None,
            name=name or None,
            email=None,  # SEEK shows only a hash of the address
            user_info={
                "id": str(data["id"]),
                "name": name,
                "first_name": attributes.get("first_name"),
                "last_name": attributes.get("last_name"),
                "login": attributes.get("login"),
                "username": attributes.get("login"),
                "mbox_sha1sum": attributes.get("mbox_sha1sum"),
                "profile": f"{provider.api_base_url}/people/{data['id']}",
            },
            token=token,
            registry_id=provider.registry_id,
        )
    email = info.get("email")
    if not email:
        emails = _get_json(
            client, f"{get_settings().github_api_url}/user/emails", timeout, provider
        )
        primary = [e for e in emails if e.get("primary") and e.get("verified")]
        email = primary[0]["email"] if primary else None
    return ProviderIdentity(
        provider=provider.name,
        provider_user_id=str(info["id"]),
        username=info.get("login"),
        name=info.get("name"),
        email=email,
        user_info={
            "id": str(info["id"]),
            "login": info.get("login"),
            "username": info.get("login"),
            "name": info.get("name"),
            "email": email,
            "profile": info.get("html_url"),
            "picture": info.get("avatar_url"),
        },
        token=token,
    )


def _web_url(value: str | None) -> str | None:
    return value if value and value.lower().startswith(("https://", "http://")) else None


def _oidc_identity(
    provider: Provider, client, token: dict, timeout: int, nonce: str
) -> ProviderIdentity:
    """An OpenID Connect sign-in: the ID token verified first, then who the person is from
    the userinfo endpoint (the same `sub`)."""
    from chalicelib.auth import oidc

    found = oidc.discover(provider)
    claims = oidc.verify_id_token(provider, found, token, nonce, provider.client_secret() or "")
    info = _get_json(client, found.userinfo_endpoint, timeout, provider)
    if not isinstance(info, dict) or info.get("sub") != claims["sub"]:
        # OpenID Connect Core 5.3.2: the userinfo of another person must not be used.
        raise oidc.id_token_refused(provider, "the userinfo's sub is not the ID token's")

    def text(name: str) -> str | None:
        value = info.get(name, claims.get(name))
        return (value.strip() or None) if isinstance(value, str) else None

    address = text("email")
    verified = info.get("email_verified", claims.get("email_verified"))
    # Some providers send the flag as a string; only an explicit "false" withholds it.
    email = None if verified is False or str(verified).lower() == "false" else address
    name = text("name") or " ".join(x for x in (text("given_name"), text("family_name")) if x)
    username = text("preferred_username") or (address.split("@")[0] if address else None)
    sub = str(claims["sub"])
    return ProviderIdentity(
        provider=provider.name,
        provider_user_id=sub,
        username=username,
        name=name or None,
        email=email,
        user_info={
            "id": sub,
            "sub": sub,
            "preferred_username": text("preferred_username"),
            "username": text("preferred_username"),
            "name": name or None,
            "given_name": text("given_name"),
            "family_name": text("family_name"),
            "email": email,
            "email_verified": verified if isinstance(verified, bool) else None,
            # Shown as links on the profile page: web addresses only (no `javascript:`).
            "profile": _web_url(text("profile")),
            "picture": _web_url(text("picture")),
            "provider_uri": found.issuer,
            "userinfo_endpoint": found.userinfo_endpoint,
        },
        token=token,
    )


# --- provider tokens, encrypted at rest ---------------------------------------------------


_fernets: dict[str, Any] = {}


def _fernet():
    """Fernet (AES-128-CBC + HMAC-SHA256) under the parameter store's key, created on first
    use."""
    from cryptography.fernet import Fernet

    from chalicelib.secrets import get_secrets

    store = get_secrets()
    key = store.get(TOKENS_KEY_NAME)
    if not key:
        # Created once for all: tokens sealed under a key another container overwrote
        # could never be opened again.
        key = store.put_if_absent(TOKENS_KEY_NAME, Fernet.generate_key().decode())
    fernet = _fernets.get(key)
    if fernet is None:
        fernet = _fernets[key] = Fernet(key.encode())
    return fernet


def seal_tokens(tokens: dict[str, Any]) -> dict[str, str]:
    """What `Identity.tokens` stores: the token set, encrypted."""
    return {"v": "1", "sealed": _fernet().encrypt(json.dumps(tokens).encode()).decode()}


def open_tokens(stored: dict | None) -> dict[str, Any]:
    """The token set of an identity; {} when none, or unreadable (a changed key: the person
    signs in again)."""
    from cryptography.fernet import InvalidToken

    if not stored or "sealed" not in stored:
        return {}
    try:
        return json.loads(_fernet().decrypt(stored["sealed"].encode()))
    except (InvalidToken, ValueError):
        log.warning("an identity's provider tokens cannot be decrypted; ignoring them")
        return {}


def store_token(identity: Identity, token: dict[str, Any], scope: str | None = None) -> None:
    """Keep `token` with the identity, keyed by scope (several may coexist)."""
    tokens = open_tokens(identity.tokens)
    token = dict(token)
    if "expires_in" in token and "expires_at" not in token:
        token["expires_at"] = int(time.time()) + int(token["expires_in"])
    tokens[scope or token.get("scope") or "default"] = token
    identity.tokens = seal_tokens(tokens)


def fresh_token(session: Session, identity: Identity, scope: str | None = None) -> str | None:
    """A usable access token of the provider for this identity: refreshed (and stored
    again) when expired; None when there is none or it cannot be refreshed."""
    tokens = open_tokens(identity.tokens)
    if not tokens:
        return None
    key = scope if scope in tokens else next(iter(tokens))
    token = tokens[key]
    if int(token.get("expires_at") or 0) > time.time() + 30:
        return token.get("access_token")
    if not token.get("refresh_token"):
        return None
    try:
        return renew_token(session, identity, key)
    except ProviderError:
        return None


class NoRefreshToken(ProviderError):
    """The identity keeps no token that could be refreshed (the person signs in again)."""

    status = 409


def renew_token(session: Session, identity: Identity, scope: str | None = None) -> str | None:
    """Refresh the identity's token (for `scope`, else its first) at the provider now,
    expired or not, and store the new one. Raises ProviderError saying why it could not
    (NoRefreshToken when there is nothing to refresh); the stored tokens are then unchanged."""
    import requests
    from authlib.common.errors import AuthlibBaseError
    from authlib.integrations.base_client import OAuthError

    from chalicelib.errors import NotFoundError

    tokens = open_tokens(identity.tokens)
    name = identity.provider
    if not tokens:
        raise NoRefreshToken("no token is stored", provider=name, status=409)
    key = scope if scope in tokens else next(iter(tokens))
    if not tokens[key].get("refresh_token"):
        raise NoRefreshToken(
            "the token has no refresh token (the person must sign in again)",
            provider=name,
            status=409,
        )
    try:
        provider = resolve_endpoints(get_provider(session, name))
    except NotFoundError:
        raise ProviderError(f"there is no login provider named {name!r}", provider=name) from None
    client = _oauth_session(provider)  # ProviderError when its secret is missing
    try:
        new = client.refresh_token(
            provider.token_url,
            refresh_token=tokens[key]["refresh_token"],
            timeout=get_settings().provider_timeout,
            allow_redirects=False,
        )
    except OAuthError as exc:
        log.warning("refreshing a %s token failed: %s", provider.name, exc.error)
        raise ProviderError(
            f"{provider.label} refused to refresh the token ({exc.error})", provider=name
        ) from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        log.warning("refreshing a %s token failed: HTTP %s", provider.name, status)
        raise ProviderError(
            f"{provider.label} failed to refresh the token (HTTP {status})", provider=name
        ) from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        log.warning("refreshing a %s token failed: %s", provider.name, type(exc).__name__)
        raise ProviderError(
            f"{provider.label} did not answer ({type(exc).__name__})", provider=name, status=503
        ) from None
    except (requests.RequestException, AuthlibBaseError, ValueError) as exc:
        log.warning("refreshing a %s token failed: %s", provider.name, type(exc).__name__)
        raise ProviderError(
            f"{provider.label} answered the refresh with something unusable", provider=name
        ) from None
    store_token(identity, dict(new), key)
    session.flush()
    return new.get("access_token")
