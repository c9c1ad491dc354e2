"""Our OAuth2 authorization server (authlib): clients, the token endpoint and bearer checks.

Only the client_credentials grant is wired today (registries calling us, contract §10);
authorization-code flows and login arrive with the login issue. Client secrets and tokens
are stored as SHA-256: a leaked database does not leak working credentials.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from chalicelib.auth import scopes as S
from chalicelib.auth.hashing import new_client_id, new_token, token_hash
from chalicelib.auth.principals import Principal
from chalicelib.config import get_settings
from chalicelib.errors import BadRequestError, UnauthorizedError
from chalicelib.models import OAuth2Client, OAuth2Token, Registry, User, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

AUTH_METHODS = ("client_secret_post", "client_secret_basic")
REGISTRY_GRANT_TYPES = ("client_credentials", "authorization_code", "refresh_token")
REGISTRY_RESPONSE_TYPES = ("code", "token")


@dataclass(frozen=True)
class NewClient:
    client: OAuth2Client
    client_secret: str  # plaintext, returned once; the caller stores it where it must


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
    if auth_method not in AUTH_METHODS:
        raise BadRequestError(
            f"client auth method must be one of {', '.join(AUTH_METHODS)}, got {auth_method!r}"
        )
    for uri in redirect_uris or []:
        if urlsplit(uri).scheme not in {"http", "https"} or not urlsplit(uri).netloc:
            raise BadRequestError(f"redirect URI must be an absolute http(s) URL: {uri!r}")
    secret = new_token(36)  # 48 characters, as LifeMonitor's
    client = OAuth2Client(
        client_id=new_client_id(),
        client_secret_hash=token_hash(secret),
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


def rotate_secret(session: Session, client: OAuth2Client) -> str:
    secret = new_token(36)
    client.client_secret_hash = token_hash(secret)
    session.flush()
    return secret


class _Client:
    """authlib's ClientMixin over our model."""

    def __init__(self, model: OAuth2Client) -> None:
        self.model = model

    def get_client_id(self) -> str:
        return self.model.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.model.redirect_uris
        return uris[0] if uris else None

    def get_allowed_scope(self, scope: str | None) -> str:
        # Grant what was asked for and is allowed (WorkflowHub's list is then accepted
        # whole); no scope asked means every allowed scope.
        allowed = S.parse(self.model.scope)
        if not scope:
            return S.join(allowed)
        return S.join(S.parse(scope) & allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.model.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        import hmac

        stored = self.model.client_secret_hash
        return bool(stored) and hmac.compare_digest(stored, token_hash(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        # Both secret-based methods are equally strong; accepting both spares registry
        # operators a silent mismatch (the configured one is what we advertise).
        return self.model.client_secret_hash is not None and method in AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type in self.model.client_metadata.get("response_types", [])

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


def _build_server(session: Session):
    from authlib.oauth2 import AuthorizationServer
    from authlib.oauth2.rfc6749 import OAuth2Payload, OAuth2Request
    from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
    from authlib.oauth2.rfc6750 import BearerTokenGenerator

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
        def __init__(self, method: str, uri: str, headers: dict, form: list[tuple[str, str]]):
            super().__init__(method=method, uri=uri, headers=headers)
            lists: dict[str, list[str]] = {}
            for key, value in form:
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
            model = session.query(OAuth2Client).filter_by(client_id=client_id).one_or_none()
            return _Client(model) if model is not None else None

        def save_token(self, token, request):
            now = utcnow()
            user = getattr(request, "user", None)
            session.add(
                OAuth2Token(
                    client_id=request.client.get_client_id(),
                    user_id=user.id if user is not None else None,
                    token_type=token["token_type"],
                    access_token_hash=token_hash(token["access_token"]),
                    refresh_token_hash=(
                        token_hash(token["refresh_token"]) if token.get("refresh_token") else None
                    ),
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
            return TokenResponse(status=status, body=body, headers=dict(headers))

        def send_signal(self, name, *args, **kwargs):
            pass

    class ClientCredentials(ClientCredentialsGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)

    expires_in = get_settings().token_expires_in
    server = Server(scopes_supported=sorted(S.ALL))
    server.register_token_generator(
        "default",
        BearerTokenGenerator(
            access_token_generator=lambda **_: new_token(32),
            refresh_token_generator=lambda **_: new_token(32),
            expires_generator=lambda client, grant_type: expires_in,
        ),
    )
    server.register_grant(ClientCredentials)
    return server, _Request


def token_endpoint(
    session: Session, *, uri: str, headers: dict[str, str], body: bytes | str | None
) -> TokenResponse:
    """RFC 6749 token endpoint: form-encoded body in, token or OAuth2 error out."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequestError("request body is not UTF-8") from None
    try:
        form = parse_qsl(body or "", keep_blank_values=True, strict_parsing=bool(body))
    except ValueError:
        raise BadRequestError("request body is not form-encoded") from None
    from authlib.oauth2 import OAuth2Error

    server, request_cls = _build_server(session)
    try:
        request = request_cls("POST", uri, _Headers(headers), form)
    except OAuth2Error as error:  # e.g. insecure_transport
        status, body, out_headers = error()
        return TokenResponse(status, dict(body), dict(out_headers))
    response = server.create_token_response(request)
    if isinstance(response.body, str):  # authlib serialises some errors itself
        response = TokenResponse(response.status, json.loads(response.body), response.headers)
    return response


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
