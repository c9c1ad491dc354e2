"""A user's own OAuth apps: authorization-code clients acting for that user, created,
edited and deleted from the profile page, and (admin CLI only) client_credentials clients
acting as their owner. The client machinery is `auth/oauth2`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalicelib.auth import scopes as S
from chalicelib.errors import BadRequestError, NotFoundError
from chalicelib.models import OAuth2Client, OAuth2Token, User

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from chalicelib.auth.oauth2 import NewClient

#: What an app may ask a user for (LifeMonitor's AuthorizationCodeFlow).
ALLOWED_SCOPES = S.AUTHORIZATION_CODE_FLOW
GRANT_TYPES = ("authorization_code", "refresh_token")
RESPONSE_TYPES = ("code",)
MAX_REDIRECT_URIS = 10
#: A client_credentials client acting as its owner: an API key's scopes, no registry one.
CLIENT_CREDENTIALS_SCOPES = S.USER_CLIENT_CREDENTIALS
CLIENT_CREDENTIALS_GRANT_TYPES = ("client_credentials",)


def _name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 128:
        raise BadRequestError("the app needs a name of at most 128 characters")
    return name


def _redirect_uris(text: str | list[str]) -> list[str]:
    """One URI a line (or a list); absolute http(s) URLs without fragments, exact as
    the app will send them."""
    from urllib.parse import urlsplit

    items = text.split() if isinstance(text, str) else list(text)
    uris = list(dict.fromkeys(u.strip() for u in items if u.strip()))
    if not uris:
        raise BadRequestError("give at least one redirect URI")
    if len(uris) > MAX_REDIRECT_URIS:
        raise BadRequestError(f"at most {MAX_REDIRECT_URIS} redirect URIs")
    for uri in uris:
        parts = urlsplit(uri)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.fragment:
            raise BadRequestError(f"redirect URI must be an absolute http(s) URL: {uri!r}")
        if len(uri) > 1024:
            raise BadRequestError("a redirect URI is too long")
    return uris


def _scopes(
    scopes: list[str], allowed: frozenset[str] = ALLOWED_SCOPES, kind: str = "OAuth apps"
) -> frozenset[str]:
    requested = frozenset(scopes)
    if not requested:
        raise BadRequestError("choose at least one scope")
    bad = sorted(requested - allowed)
    if bad:
        raise BadRequestError(f"scope(s) not available to {kind}: {', '.join(bad)}")
    return requested


def _auth_method(method: str, allowed: tuple[str, ...]) -> str:
    if method not in allowed:
        raise BadRequestError(
            f"client auth method must be one of {', '.join(allowed)}, got {method!r}"
        )
    return method


def _client_uri(uri: str | None) -> str | None:
    from urllib.parse import urlsplit

    uri = (uri or "").strip()
    if not uri:
        return None
    if urlsplit(uri).scheme not in {"http", "https"} or len(uri) > 1024:
        raise BadRequestError(f"the app's home page must be an http(s) URL: {uri!r}")
    return uri


def list_apps(session: Session, user_id: int) -> list[OAuth2Client]:
    return list(
        session.query(OAuth2Client)
        .filter(OAuth2Client.user_id == user_id)
        .order_by(OAuth2Client.client_name, OAuth2Client.id)
    )


def get_app(session: Session, user_id: int, client_id: str) -> OAuth2Client:
    """One of the user's apps; someone else's is as unknown as a missing one."""
    client = (
        session.query(OAuth2Client)
        .filter(OAuth2Client.client_id == (client_id or "")[:48], OAuth2Client.user_id == user_id)
        .one_or_none()
    )
    if client is None:
        raise NotFoundError("No such OAuth app among yours")
    return client


def create_app(
    session: Session,
    user: User,
    *,
    name: str,
    redirect_uris: str | list[str],
    scopes: list[str],
    client_uri: str | None = None,
    auth_method: str = "client_secret_post",
) -> NewClient:
    """An authorization-code client owned by `user`: confidential (the secret comes back
    once, in clear, and is kept only hashed), or public with auth method `none` (no
    secret; PKCE required)."""
    from chalicelib.auth import oauth2

    return oauth2.create_client(
        session,
        client_name=_name(name),
        scope=_scopes(scopes),
        grant_types=GRANT_TYPES,
        response_types=RESPONSE_TYPES,
        redirect_uris=_redirect_uris(redirect_uris),
        auth_method=_auth_method(auth_method, oauth2.CLIENT_AUTH_METHODS),
        client_uri=_client_uri(client_uri),
        owner=user,
    )


def create_client_credentials_app(
    session: Session,
    user: User,
    *,
    name: str,
    scopes: list[str],
    client_uri: str | None = None,
    auth_method: str = "client_secret_post",
) -> NewClient:
    """A confidential client_credentials client whose tokens act as `user` with the
    granted scopes (a script's credentials). Never a registry scope: those are a
    registry's, and a user's client is not one."""
    from chalicelib.auth import oauth2

    return oauth2.create_client(
        session,
        client_name=_name(name),
        scope=_scopes(scopes, CLIENT_CREDENTIALS_SCOPES, "client_credentials clients"),
        grant_types=CLIENT_CREDENTIALS_GRANT_TYPES,
        auth_method=_auth_method(auth_method, oauth2.AUTH_METHODS),
        client_uri=_client_uri(client_uri),
        owner=user,
    )


def list_all_apps(session: Session) -> list[tuple[OAuth2Client, str | None]]:
    """Every OAuth2 client (for administrators): (client, its registry's name or None)."""
    from chalicelib.models import Registry

    return [
        (client, registry)
        for client, registry in session.query(OAuth2Client, Registry.name)
        .outerjoin(Registry, Registry.oauth_client_id == OAuth2Client.id)
        .order_by(OAuth2Client.client_name, OAuth2Client.id)
    ]


def _any_app(session: Session, client_id: str) -> OAuth2Client:
    """A user's OAuth app by client id, for an administrator; a registry's client (changed
    only with its registry) or a system client is refused."""
    from chalicelib.models import Registry

    client = (
        session.query(OAuth2Client)
        .filter(OAuth2Client.client_id == (client_id or "")[:48])
        .one_or_none()
    )
    if client is None:
        raise NotFoundError(f"no OAuth client with id {client_id!r}")
    registry = session.query(Registry.name).filter_by(oauth_client_id=client.id).scalar()
    if registry is not None or client.user_id is None:
        what = f"registry {registry!r}" if registry else "no user (a system client)"
        raise BadRequestError(
            f"client {client_id!r} belongs to {what}: it is not an OAuth app"
            + ("; use `registry delete` or `registry update`" if registry else "")
        )
    return client


def delete_any_app(session: Session, client_id: str) -> dict:
    """An administrator deletes anyone's app (tokens and codes too); what was deleted. A
    registry's client goes only with its registry (`registry delete`)."""
    client = _any_app(session, client_id)
    deleted = {
        "client_id": client.client_id,
        "client_name": client.client_name,
        "owner": client.user.username,
    }
    delete_app(session, client.user_id, client.client_id)
    return deleted


def rotate_any_secret(session: Session, client_id: str) -> tuple[OAuth2Client, str]:
    """An administrator gives anyone's confidential app a new secret (its tokens are
    revoked, as when the owner does it in the OAuth Apps tab); the client and the secret,
    which exists in clear only now."""
    from chalicelib.auth import oauth2

    client = _any_app(session, client_id)
    if client.token_endpoint_auth_method == oauth2.PUBLIC_AUTH_METHOD:
        raise BadRequestError(f"client {client_id!r} is public: it has no secret")
    return client, rotate_secret(session, client.user_id, client.client_id)


def is_client_credentials(client: OAuth2Client) -> bool:
    """A user's client_credentials client (`admin oauth create-client-credentials`)."""
    return tuple(client.grant_types or ()) == CLIENT_CREDENTIALS_GRANT_TYPES


def update_app(
    session: Session,
    user_id: int,
    client_id: str,
    *,
    name: str,
    redirect_uris: str | list[str],
    scopes: list[str],
    client_uri: str | None = None,
) -> OAuth2Client:
    """Change an app. Tokens granted beyond the new scopes are revoked: an app must not
    keep what its owner took away."""
    client = get_app(session, user_id, client_id)
    if is_client_credentials(client):
        # A script's credentials: no redirect URIs, a user's client_credentials scopes.
        new_scopes = _scopes(scopes, CLIENT_CREDENTIALS_SCOPES, "client_credentials clients")
        uris: list[str] = []
    else:
        new_scopes = _scopes(scopes)
        uris = _redirect_uris(redirect_uris)
    metadata = dict(client.client_metadata)
    old_scopes = S.parse(metadata.get("scope"))
    metadata.update(
        client_name=_name(name),
        redirect_uris=uris,
        scope=S.join(new_scopes),
        client_uri=_client_uri(client_uri),
    )
    client.client_name = metadata["client_name"]
    client.client_metadata = metadata  # a new dict: the JSON column sees the change
    if old_scopes - new_scopes:
        revoke_tokens(session, client.client_id)
    session.flush()
    return client


def rotate_secret(session: Session, user_id: int, client_id: str) -> str:
    """A new secret (shown once); the old one and every token issued stop working."""
    from chalicelib.auth import oauth2

    client = get_app(session, user_id, client_id)
    secret = oauth2.rotate_secret(session, client)
    revoke_tokens(session, client.client_id)
    return secret


def delete_app(session: Session, user_id: int, client_id: str) -> None:
    """Delete an app; its tokens and codes go with it (foreign keys cascade)."""
    from sqlalchemy import delete

    client = get_app(session, user_id, client_id)
    revoke_tokens(session, client.client_id)
    session.execute(delete(OAuth2Client).where(OAuth2Client.id == client.id))
    session.expunge(client)
    session.flush()


def revoke_tokens(session: Session, client_id: str) -> None:
    from sqlalchemy import update

    session.execute(
        update(OAuth2Token)
        .where(OAuth2Token.client_id == client_id, OAuth2Token.revoked.is_(False))
        .values(revoked=True)
    )
