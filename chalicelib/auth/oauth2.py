"""Our OAuth2 authorization server (authlib's server classes): clients, the authorization
endpoint, the token endpoint, revocation, and bearer checks.

Grants: `authorization_code` (PKCE S256; required of public clients, whose auth method is
`none`), `refresh_token` (rotating: each use revokes the old token), `client_credentials`
(registries calling us, contract §10; a client that is not a registry's and has an owner
gets tokens acting as that user, with the granted scopes). No implicit, no password grant.

Nothing secret is stored in clear: client secrets, codes, access and refresh tokens are
kept as SHA-256 (high-entropy random values, so a fast hash is enough and lookups stay
indexed). A leaked database does not leak working credentials.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from chalicelib.auth import scopes as S
from chalicelib.auth.hashing import new_client_id, new_token, token_hash
from chalicelib.auth.principals import Principal
from chalicelib.config import get_settings
from chalicelib.errors import BadRequestError, UnauthorizedError
from chalicelib.models import (
    OAuth2AuthorizationCode,
    OAuth2Client,
    OAuth2Token,
    Registry,
    User,
    utcnow,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: Secret-based client authentication (confidential clients).
AUTH_METHODS = ("client_secret_post", "client_secret_basic")
#: Public clients (a browser or native app) authenticate with nothing but PKCE.
PUBLIC_AUTH_METHOD = "none"
CLIENT_AUTH_METHODS = (*AUTH_METHODS, PUBLIC_AUTH_METHOD)
REGISTRY_GRANT_TYPES = ("client_credentials", "authorization_code", "refresh_token")
REGISTRY_RESPONSE_TYPES = ("code",)
#: Generic apps acting for a user (the "OAuth apps" of the profile page).
APP_GRANT_TYPES = ("authorization_code", "refresh_token")
APP_RESPONSE_TYPES = ("code",)
#: A user's own client_credentials client (a script acting as its owner).
USER_CLIENT_CREDENTIALS_GRANT_TYPES = ("client_credentials",)


@dataclass(frozen=True)
class NewClient:
    client: OAuth2Client
    # Plaintext, returned once (None for public clients); the caller stores it if it must.
    client_secret: str | None


def _check_redirect_uris(redirect_uris: list[str]) -> None:
    for uri in redirect_uris:
        parts = urlsplit(uri)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.fragment:
            raise BadRequestError(
                f"redirect URI must be an absolute http(s) URL without fragment: {uri!r}"
            )


def create_client(
    session: Session,
    *,
    client_name: str,
    scope: frozenset[str],
    grant_types: tuple[str, ...],
    response_types: tuple[str, ...] = (),
    redirect_uris: list[str] | None = None,
    auth_method: str = "client_secret_post",
    client_uri: str | None = None,
    owner: User | None = None,
) -> NewClient:
    if auth_method not in CLIENT_AUTH_METHODS:
        raise BadRequestError(
            f"client auth method must be one of {', '.join(CLIENT_AUTH_METHODS)}, "
            f"got {auth_method!r}"
        )
    if auth_method == PUBLIC_AUTH_METHOD and "client_credentials" in grant_types:
        raise BadRequestError(
            "client auth method 'none' (a public client) cannot use client_credentials"
        )
    unknown = S.unknown(frozenset(scope))
    if unknown:
        raise BadRequestError(f"unknown scope(s): {' '.join(unknown)}")
    _check_redirect_uris(list(redirect_uris or []))
    if "authorization_code" in grant_types and not redirect_uris and owner is not None:
        raise BadRequestError("an authorization-code client needs at least one redirect URI")
    secret = None if auth_method == PUBLIC_AUTH_METHOD else new_token(36)  # 48 characters
    client = OAuth2Client(
        client_id=new_client_id(),
        client_secret_hash=token_hash(secret) if secret else None,
        client_name=client_name,
        user=owner,
        client_metadata={
            "client_name": client_name,
            "client_uri": client_uri,
            "grant_types": list(grant_types),
            "response_types": list(response_types),
            "redirect_uris": list(redirect_uris or []),
            "scope": S.join(scope),
            "token_endpoint_auth_method": auth_method,
        },
    )
    session.add(client)
    session.flush()
    return NewClient(client=client, client_secret=secret)


def revoke_client_tokens(session: Session, client_id: str) -> int:
    """Revoke every token of a client and drop its pending codes; the number revoked."""
    from sqlalchemy import delete, update

    result = session.execute(
        update(OAuth2Token)
        .where(OAuth2Token.client_id == client_id, OAuth2Token.revoked.is_(False))
        .values(revoked=True)
    )
    session.execute(
        delete(OAuth2AuthorizationCode).where(OAuth2AuthorizationCode.client_id == client_id)
    )
    return result.rowcount or 0


def rotate_secret(session: Session, client: OAuth2Client) -> str:
    """A new secret for a confidential client. Every token issued so far is revoked: a
    rotation answers a suspected leak, and a leaked secret may have minted tokens."""
    if client.token_endpoint_auth_method == PUBLIC_AUTH_METHOD:
        raise BadRequestError("a public client has no secret to rotate")
    secret = new_token(36)
    client.client_secret_hash = token_hash(secret)
    revoke_client_tokens(session, client.client_id)
    session.flush()
    return secret


def delete_client(session: Session, client: OAuth2Client) -> None:
    """Delete a client; its tokens and codes go with it (ON DELETE CASCADE, and explicitly
    here so that no backend without foreign-key enforcement keeps them)."""
    from sqlalchemy import delete

    client_id = client.client_id
    session.execute(delete(OAuth2Token).where(OAuth2Token.client_id == client_id))
    session.execute(
        delete(OAuth2AuthorizationCode).where(OAuth2AuthorizationCode.client_id == client_id)
    )
    session.delete(client)
    session.flush()


class _Client:
    """authlib's ClientMixin over our model."""

    def __init__(self, model: OAuth2Client, *, registry: bool) -> None:
        self.model = model
        self.registry = registry

    @property
    def is_public(self) -> bool:
        return self.model.token_endpoint_auth_method == PUBLIC_AUTH_METHOD

    @property
    def is_registry(self) -> bool:
        # Registry clients skip consent, as in LifeMonitor: the registry's own login
        # already asked the person. (A user's client_credentials client is not one.)
        return self.registry

    def get_client_id(self) -> str:
        return self.model.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.model.redirect_uris
        # Only an unambiguous default: with several URIs the client must say which.
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        # Grant what was asked for and is allowed (WorkflowHub's list is then accepted
        # whole); no scope asked means every allowed scope.
        allowed = S.parse(self.model.scope)
        if not scope:
            return S.join(allowed)
        return S.join(S.parse(scope) & allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # Exact string match (RFC 6749 §3.1.2.3, OAuth 2.1): no prefix, no normalisation.
        return redirect_uri in self.model.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        import hmac

        stored = self.model.client_secret_hash
        return bool(stored) and hmac.compare_digest(stored, token_hash(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.is_public:
            return method == PUBLIC_AUTH_METHOD
        # Both secret-based methods are equally strong; accepting both spares registry
        # operators a silent mismatch (the configured one is what we advertise).
        return self.model.client_secret_hash is not None and method in AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and response_type in self.model.client_metadata.get(
            "response_types", []
        )

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.model.grant_types


class _Headers(dict):
    """Case-insensitive header lookup, as authlib expects of a framework's headers."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in headers.items()})

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default=None):
        return super().get(key.lower(), default)


@dataclass(frozen=True)
class TokenResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class _Effects:
    """What must happen even when the request fails (and its transaction rolls back)."""

    replayed_code_hash: str | None = None


def _build_server(session: Session, effects: _Effects | None = None):
    from authlib.oauth2 import AuthorizationServer
    from authlib.oauth2.rfc6749 import OAuth2Payload, OAuth2Request
    from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError
    from authlib.oauth2.rfc6749.grants import (
        AuthorizationCodeGrant,
        ClientCredentialsGrant,
        RefreshTokenGrant,
    )
    from authlib.oauth2.rfc6750 import BearerTokenGenerator
    from authlib.oauth2.rfc7009 import RevocationEndpoint
    from authlib.oauth2.rfc7636 import CodeChallenge
    from sqlalchemy import select, update

    settings = get_settings()
    effects = effects if effects is not None else _Effects()

    class _Payload(OAuth2Payload):
        def __init__(self, form: dict[str, str], lists: dict[str, list[str]]) -> None:
            self._form = form
            self._lists = lists

        @property
        def data(self):
            return self._form

        @property
        def datalist(self):
            return self._lists

    class _Request(OAuth2Request):
        """Parameters come from the query (authorize GET) or the form (POSTs)."""

        def __init__(self, method: str, uri: str, headers: dict, params: list[tuple[str, str]]):
            super().__init__(method=method, uri=uri, headers=headers)
            lists: dict[str, list[str]] = {}
            for key, value in params:
                lists.setdefault(key, []).append(value)
            self._form = {k: v[0] for k, v in lists.items()}
            self.payload = _Payload(self._form, lists)

        @property
        def args(self):
            return dict(parse_qsl(urlsplit(self.uri).query))

        @property
        def form(self):
            return self._form

    class Server(AuthorizationServer):
        def query_client(self, client_id):
            if not client_id or len(client_id) > 48:
                return None
            row = (
                session.query(OAuth2Client, Registry.id)
                .outerjoin(Registry, Registry.oauth_client_id == OAuth2Client.id)
                .filter(OAuth2Client.client_id == client_id)
                .first()
            )
            if row is None:
                return None
            model, registry_id = row
            return _Client(model, registry=registry_id is not None)

        def save_token(self, token, request):
            now = utcnow()
            user = getattr(request, "user", None)
            # A token from a code, or rotated from one, keeps the code's trace.
            code = getattr(request, "authorization_code", None)
            previous = getattr(request, "refresh_token", None)
            code_hash = code.code_hash if code is not None else None
            if code_hash is None and previous is not None:
                code_hash = previous.code_hash
            refresh = token.get("refresh_token")
            session.add(
                OAuth2Token(
                    client_id=request.client.get_client_id(),
                    user_id=user.id if user is not None else None,
                    token_type=token["token_type"],
                    access_token_hash=token_hash(token["access_token"]),
                    refresh_token_hash=token_hash(refresh) if refresh else None,
                    refresh_expires_at=(
                        now + timedelta(seconds=settings.refresh_token_expires_in)
                        if refresh
                        else None
                    ),
                    code_hash=code_hash,
                    scope=token.get("scope", ""),
                    issued_at=now,
                    expires_at=now + timedelta(seconds=int(token["expires_in"])),
                )
            )
            session.flush()

        def create_oauth2_request(self, request):
            return request

        def create_json_request(self, request):
            return request

        def handle_response(self, status, body, headers):
            if isinstance(body, str):  # authlib serialises some bodies itself
                body = json.loads(body) if body else {}
            return TokenResponse(status=status, body=body, headers=dict(headers))

        def send_signal(self, name, *args, **kwargs):
            pass

    class ClientCredentials(ClientCredentialsGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)

        def validate_token_request(self):
            super().validate_token_request()
            client: _Client = self.request.client
            # A registry's token acts for no user (a user comes with RegistryCodeFlow). A
            # user's own client acts as its owner: save_token records the user.
            if not client.is_registry and client.model.user_id is not None:
                self.request.user = session.get(User, client.model.user_id)

    class AuthorizationCode(AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = list(CLIENT_AUTH_METHODS)

        def save_authorization_code(self, code, request):
            now = utcnow()
            data = request.payload.data
            session.add(
                OAuth2AuthorizationCode(
                    code_hash=token_hash(code),
                    client_id=request.client.get_client_id(),
                    user_id=request.user.id,
                    redirect_uri=request.payload.redirect_uri,
                    response_type=request.payload.response_type,
                    scope=request.scope or "",
                    nonce=data.get("nonce"),
                    code_challenge=data.get("code_challenge"),
                    code_challenge_method=data.get("code_challenge_method"),
                    auth_time=now,
                    expires_at=now + timedelta(seconds=settings.auth_code_expires_in),
                )
            )
            session.flush()

        def query_authorization_code(self, code, client):
            row = (
                session.query(OAuth2AuthorizationCode)
                .filter_by(code_hash=token_hash(code), client_id=client.get_client_id())
                .one_or_none()
            )
            if row is None:
                return None
            if row.used_at is not None:
                effects.replayed_code_hash = row.code_hash
                raise InvalidGrantError(
                    "The authorization code was already used; the tokens issued with it are revoked"
                )
            if row.expires_at <= utcnow():
                raise InvalidGrantError("The authorization code has expired")
            return row

        def delete_authorization_code(self, authorization_code):
            # Claimed atomically: of two concurrent exchanges only one updates the row.
            claimed = session.execute(
                update(OAuth2AuthorizationCode)
                .where(
                    OAuth2AuthorizationCode.id == authorization_code.id,
                    OAuth2AuthorizationCode.used_at.is_(None),
                )
                .values(used_at=utcnow())
            ).rowcount
            if claimed != 1:
                raise InvalidGrantError("The authorization code was already used")

        def authenticate_user(self, authorization_code):
            return session.get(User, authorization_code.user_id)

    class Pkce(CodeChallenge):
        """S256 only ('plain' protects nothing once the request is seen); a public client
        must send a challenge, which CodeChallenge alone checks only at the token endpoint."""

        SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
        DEFAULT_CODE_CHALLENGE_METHOD = "S256"

        def validate_code_challenge(self, grant, redirect_uri):
            data = grant.request.payload.data
            challenge = data.get("code_challenge")
            if challenge and data.get("code_challenge_method", "S256") != "S256":
                raise InvalidRequestError("Unsupported 'code_challenge_method': use S256")
            if not challenge and grant.request.client.is_public:
                raise InvalidRequestError(
                    "Missing 'code_challenge': public clients must use PKCE (S256)"
                )
            return super().validate_code_challenge(grant, redirect_uri)

    class RefreshToken(RefreshTokenGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = list(CLIENT_AUTH_METHODS)
        INCLUDE_NEW_REFRESH_TOKEN = True  # rotation

        def authenticate_refresh_token(self, refresh_token):
            row = session.execute(
                select(OAuth2Token).where(
                    OAuth2Token.refresh_token_hash == token_hash(refresh_token)
                )
            ).scalar_one_or_none()
            if row is None or row.revoked:
                return None
            if row.refresh_expires_at is None or row.refresh_expires_at <= utcnow():
                return None
            return row

        def authenticate_user(self, refresh_token):
            return session.get(User, refresh_token.user_id) if refresh_token.user_id else None

        def revoke_old_credential(self, refresh_token):
            # Atomic: two concurrent uses of one refresh token cannot both rotate it.
            revoked = session.execute(
                update(OAuth2Token)
                .where(OAuth2Token.id == refresh_token.id, OAuth2Token.revoked.is_(False))
                .values(revoked=True)
            ).rowcount
            if revoked != 1:
                raise InvalidGrantError("The refresh token was already used")

    class Revocation(RevocationEndpoint):
        CLIENT_AUTH_METHODS = list(CLIENT_AUTH_METHODS)

        def query_token(self, token_string, token_type_hint):
            digest = token_hash(token_string or "")
            columns = [OAuth2Token.access_token_hash, OAuth2Token.refresh_token_hash]
            if token_type_hint == "refresh_token":  # noqa: S105 - a hint name
                columns.reverse()
            for column in columns:
                row = session.execute(
                    select(OAuth2Token).where(column == digest)
                ).scalar_one_or_none()
                if row is not None:
                    return row
            return None

        def revoke_token(self, token, request):
            # The access token and its refresh token are one grant: both end.
            token.revoked = True
            session.flush()

    access_expires_in = settings.token_expires_in
    server = Server(scopes_supported=sorted(S.ALL))
    server.register_token_generator(
        "default",
        BearerTokenGenerator(
            access_token_generator=lambda **_: new_token(32),
            refresh_token_generator=lambda **_: new_token(32),
            expires_generator=lambda client, grant_type: access_expires_in,
        ),
    )
    server.register_grant(ClientCredentials)
    server.register_grant(AuthorizationCode, [Pkce(required=True)])
    server.register_grant(RefreshToken)
    server.register_endpoint(Revocation)
    return server, _Request


def _parse_form(body: bytes | str | None) -> list[tuple[str, str]]:
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequestError("request body is not UTF-8") from None
    try:
        return parse_qsl(body or "", keep_blank_values=True, strict_parsing=bool(body))
    except ValueError:
        raise BadRequestError("request body is not form-encoded") from None


def _oauth2_error_response(error) -> TokenResponse:
    status, body, out_headers = error()
    return TokenResponse(status, dict(body), dict(out_headers))


def _revoke_replayed_code(session: Session, code_hash: str) -> None:
    from sqlalchemy import update

    session.execute(
        update(OAuth2Token)
        .where(OAuth2Token.code_hash == code_hash, OAuth2Token.revoked.is_(False))
        .values(revoked=True)
    )
    session.commit()


def token_endpoint(
    session: Session, *, uri: str, headers: dict[str, str], body: bytes | str | None
) -> TokenResponse:
    """RFC 6749 token endpoint: form-encoded body in, token or OAuth2 error out. A refused
    request changes nothing (its transaction is rolled back) — except that a replayed code
    revokes the tokens issued with it."""
    form = _parse_form(body)
    from authlib.oauth2 import OAuth2Error

    effects = _Effects()
    server, request_cls = _build_server(session, effects)
    try:
        request = request_cls("POST", uri, _Headers(headers), form)
    except OAuth2Error as error:  # e.g. insecure_transport
        return _oauth2_error_response(error)
    response = server.create_token_response(request)
    if response.status != 200:
        session.rollback()
        if effects.replayed_code_hash:
            _revoke_replayed_code(session, effects.replayed_code_hash)
    return response


def revocation_endpoint(
    session: Session, *, uri: str, headers: dict[str, str], body: bytes | str | None
) -> TokenResponse:
    """RFC 7009: the client revokes one of its tokens (access or refresh; both end).
    Unknown tokens answer 200 as the RFC asks, so nothing can be probed."""
    form = _parse_form(body)
    from authlib.oauth2 import OAuth2Error

    server, request_cls = _build_server(session)
    try:
        request = request_cls("POST", uri, _Headers(headers), form)
    except OAuth2Error as error:
        return _oauth2_error_response(error)
    response = server.create_endpoint_response("revocation", request)
    if response.status != 200:
        session.rollback()
    return response


# --- the authorization endpoint -------------------------------------------------------------


@dataclass(frozen=True)
class ConsentRequest:
    """A valid authorization request awaiting the person's decision."""

    client_id: str
    client_name: str
    client_uri: str | None
    redirect_uri: str
    scopes: list[tuple[str, str]]  # (scope, description)
    params: dict[str, str]  # the request's parameters, to post back with the decision


@dataclass(frozen=True)
class AuthorizeResult:
    """Exactly one of: `redirect` (to the client: a code or an OAuth2 error), `consent`
    (show the page), `error` (no trustworthy redirect URI: show our own error page)."""

    redirect: str | None = None
    consent: ConsentRequest | None = None
    error: str | None = None
    error_description: str | None = None
    status: int = 302
    extra: dict = field(default_factory=dict)


def _authorize_uri(params: list[tuple[str, str]]) -> str:
    from urllib.parse import urlencode

    settings = get_settings()
    base = settings.url_for("oauth2/authorize")
    if not settings.is_deployed:
        # authlib refuses plain http off loopback; deployed stages are HTTPS-only.
        base = "https://" + base.split("://", 1)[1]
    return f"{base}?{urlencode(params)}"


def has_unexpired_grant(session: Session, user_id: int, client_id: str, scope: str) -> bool:
    """The person already authorized this client for these scopes (an unexpired, unrevoked
    token exists): no consent page again, as LifeMonitor does."""
    from sqlalchemy import select

    wanted = S.parse(scope)
    rows = session.execute(
        select(OAuth2Token.scope).where(
            OAuth2Token.user_id == user_id,
            OAuth2Token.client_id == client_id,
            OAuth2Token.revoked.is_(False),
            OAuth2Token.expires_at > utcnow(),
        )
    ).scalars()
    return any(wanted <= S.parse(row) for row in rows)


def authorize(
    session: Session,
    params: list[tuple[str, str]],
    user: User,
    *,
    decision: bool | None = None,
) -> AuthorizeResult:
    """Run the authorization endpoint for a signed-in person.

    `decision` None: the first visit (GET) — a code is issued at once for registry clients
    and already-authorized clients, else the consent page is due. True/False: the person's
    answer on that page."""
    from authlib.oauth2 import OAuth2Error

    server, request_cls = _build_server(session)
    try:
        request = request_cls("GET", _authorize_uri(params), _Headers({}), params)
        grant = server.get_consent_grant(request, end_user=user)
    except OAuth2Error as error:
        return _authorize_error(error)
    client: _Client = request.client
    scope = request.scope or ""
    if decision is None and not (
        client.is_registry or has_unexpired_grant(session, user.id, client.get_client_id(), scope)
    ):
        redirect_uri = request.payload.redirect_uri or client.get_default_redirect_uri()
        return AuthorizeResult(
            consent=ConsentRequest(
                client_id=client.get_client_id(),
                client_name=client.model.client_name,
                client_uri=client.model.client_metadata.get("client_uri"),
                redirect_uri=redirect_uri or "",
                scopes=[(s, S.DESCRIPTIONS.get(s, s)) for s in sorted(S.parse(scope))],
                params=dict(request.payload.data),
            ),
            status=200,
        )
    grant_user = user if decision is not False else None
    response = server.create_authorization_response(request, grant_user=grant_user, grant=grant)
    location = response.headers.get("Location")
    if response.status == 302 and location:
        return AuthorizeResult(redirect=location)
    session.rollback()
    return AuthorizeResult(
        error=response.body.get("error", "invalid_request"),
        error_description=response.body.get("error_description"),
        status=response.status,
    )


def _authorize_error(error) -> AuthorizeResult:
    if error.redirect_uri:  # validated against the client: the client hears of it
        status, _body, headers = error()
        return AuthorizeResult(redirect=dict(headers)["Location"], status=status)
    return AuthorizeResult(
        error=error.error,
        error_description=error.get_error_description() or error.description,
        status=error.status_code or 400,
    )


def authenticate(session: Session, access_token: str) -> Principal:
    """The principal of a bearer token issued by us: one indexed query (token, its
    registry if the client is one, its user if any)."""
    from sqlalchemy import select

    row = None
    if access_token:
        row = session.execute(
            select(OAuth2Token, Registry.id, Registry.uuid, User.username)
            .join(OAuth2Client, OAuth2Client.client_id == OAuth2Token.client_id)
            .outerjoin(Registry, Registry.oauth_client_id == OAuth2Client.id)
            .outerjoin(User, User.id == OAuth2Token.user_id)
            .where(OAuth2Token.access_token_hash == token_hash(access_token))
        ).first()
    if row is None:
        raise UnauthorizedError("Invalid, expired or revoked access token")
    token, registry_id, registry_uuid, username = row
    if token.revoked or token.expires_at <= utcnow():
        raise UnauthorizedError("Invalid, expired or revoked access token")
    return Principal(
        method="oauth2",
        user_id=token.user_id,
        username=username,
        registry_id=registry_id,
        registry_uuid=registry_uuid,
        client_id=token.client_id,
        scopes=token.scopes,
    )
