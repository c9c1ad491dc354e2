"""Who is calling: resolve the `ApiKey` or `Authorization: Bearer` credentials of a request
into a principal (a user, a registry client, or both), and check scopes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chalicelib.errors import ForbiddenError, UnauthorizedError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Principal:
    method: str = "anonymous"  # "anonymous" | "api_key" | "oauth2"
    user_id: int | None = None
    username: str | None = None
    registry_id: int | None = None
    registry_uuid: str | None = None
    client_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_anonymous(self) -> bool:
        return self.method == "anonymous"

    @property
    def is_registry(self) -> bool:
        return self.registry_id is not None

    @property
    def is_user(self) -> bool:
        return self.user_id is not None

    def describe(self) -> str:
        """For logs: never the credential itself."""
        parts = [self.method]
        if self.username:
            parts.append(f"user={self.username}")
        if self.client_id:
            parts.append(f"client={self.client_id}")
        return " ".join(parts)


ANONYMOUS = Principal()


def resolve(session: Session, api_key: str | None, authorization: str | None) -> Principal:
    """The principal behind a request's credentials; ANONYMOUS when it sends none.

    Invalid credentials are an error (401), not anonymity: a client whose key was revoked
    must learn so rather than silently see only public data."""
    if api_key is not None:
        from chalicelib.auth import apikeys

        return apikeys.authenticate(session, api_key.strip())
    if authorization:
        scheme, _, credential = authorization.strip().partition(" ")
        # Other schemes (Basic on /oauth2/token) are for the endpoint, not for us.
        if scheme.lower() == "bearer":
            from chalicelib.auth import oauth2

            return oauth2.authenticate(session, credential.strip())
    return ANONYMOUS


def require(
    principal: Principal,
    scopes: Iterable[str] = (),
    *,
    anonymous: bool = False,
    user: bool = False,
    registry: bool = False,
    registry_without_user: bool = False,
) -> None:
    """Raise 401/403 unless the principal may call an operation.

    `anonymous`: callers without credentials are let through (public reads).
    `user`/`registry`: the operation needs a user / a registry client.
    Scopes are checked for every authenticated caller."""
    if principal.is_anonymous:
        if anonymous:
            return
        raise UnauthorizedError(
            "Authentication required: send an 'ApiKey' header or an OAuth2 bearer token"
        )
    missing = sorted(set(scopes) - principal.scopes)
    if missing:
        raise ForbiddenError(
            "The credentials lack the scope(s) this operation requires",
            required_scopes=sorted(scopes),
            missing_scopes=missing,
        )
    if user and not principal.is_user:
        raise ForbiddenError("This operation needs a user (an API key or a user's token)")
    if registry and not principal.is_registry:
        raise ForbiddenError("This operation needs a registry client's token")
    if registry_without_user and (not principal.is_registry or principal.is_user):
        raise ForbiddenError("This operation needs a registry client acting without a user")
