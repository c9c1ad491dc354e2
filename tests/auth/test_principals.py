"""Principals: resolving credentials and checking what an operation requires."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib.auth import apikeys, principals
from chalicelib.auth import scopes as S
from chalicelib.auth.hashing import token_hash
from chalicelib.auth.principals import ANONYMOUS, Principal, require
from chalicelib.errors import ForbiddenError, UnauthorizedError

USER = Principal(
    method="api_key",
    user_id=1,
    username="alice",
    scopes=frozenset({"workflow.read", "user.profile"}),
)
REGISTRY = Principal(
    method="oauth2",
    registry_id=7,
    registry_uuid="r-uuid",
    client_id="cid",
    scopes=S.REGISTRY_CLIENT,
)
REGISTRY_FOR_USER = Principal(
    method="oauth2",
    user_id=1,
    username="alice",
    registry_id=7,
    client_id="cid",
    scopes=S.REGISTRY_CLIENT,
)


def test_anonymous():
    assert ANONYMOUS.is_anonymous
    assert not ANONYMOUS.is_user and not ANONYMOUS.is_registry
    assert ANONYMOUS.scopes == frozenset()
    assert ANONYMOUS.describe() == "anonymous"


def test_describe_never_shows_credentials():
    assert USER.describe() == "api_key user=alice"
    assert REGISTRY.describe() == "oauth2 client=cid"


def test_anonymous_allowed():
    require(ANONYMOUS, ["workflow.read"], anonymous=True)  # scopes are not asked of anonymous


def test_anonymous_refused():
    with pytest.raises(UnauthorizedError) as info:
        require(ANONYMOUS, ["workflow.read"])
    assert info.value.status == 401
    assert "ApiKey" in info.value.detail
    with pytest.raises(UnauthorizedError):
        require(ANONYMOUS)


def test_scopes_present():
    require(USER, ["workflow.read"])
    require(USER, ["workflow.read", "user.profile"], anonymous=True, user=True)
    require(USER, [])


def test_missing_scope_is_forbidden_with_details():
    with pytest.raises(ForbiddenError) as info:
        require(USER, ["workflow.write", "workflow.read", "user.workflow.write"])
    err = info.value
    assert err.status == 403
    assert err.extra_info["missing_scopes"] == ["user.workflow.write", "workflow.write"]
    assert err.extra_info["required_scopes"] == [
        "user.workflow.write",
        "workflow.read",
        "workflow.write",
    ]


def test_scopes_checked_even_when_anonymous_is_allowed():
    with pytest.raises(ForbiddenError):
        require(USER, ["workflow.write"], anonymous=True)


def test_user_requirement():
    require(USER, user=True)
    require(REGISTRY_FOR_USER, user=True)
    with pytest.raises(ForbiddenError, match="needs a user"):
        require(REGISTRY, ["registry.info"], user=True)


def test_registry_requirement():
    require(REGISTRY, ["registry.info"], registry=True)
    require(REGISTRY_FOR_USER, registry=True)
    with pytest.raises(ForbiddenError, match="registry client"):
        require(USER, ["workflow.read"], registry=True)


def test_registry_without_user_requirement():
    require(REGISTRY, registry_without_user=True)
    with pytest.raises(ForbiddenError, match="without a user"):
        require(REGISTRY_FOR_USER, registry_without_user=True)
    with pytest.raises(ForbiddenError):
        require(USER, registry_without_user=True)


def test_scope_check_comes_before_the_kind_check():
    with pytest.raises(ForbiddenError) as info:
        require(USER, ["registry.info"], registry=True)
    assert info.value.extra_info["missing_scopes"] == ["registry.info"]


# --- resolve ----------------------------------------------------------------------------


def test_resolve_without_credentials_is_anonymous(session):
    assert principals.resolve(session, None, None) is ANONYMOUS
    assert principals.resolve(session, None, "") is ANONYMOUS
    # Basic is for the token endpoint, not for us.
    assert principals.resolve(session, None, "Basic Zm9vOmJhcg==") is ANONYMOUS


def test_resolve_api_key(session):
    from chalicelib.services import users

    key = apikeys.create(session, users.create_user(session, "alice"), ["workflow.read"]).key
    p = principals.resolve(session, f" {key} ", None)
    assert (p.method, p.username, p.scopes) == ("api_key", "alice", {"workflow.read"})
    # The ApiKey header takes precedence over an Authorization header.
    assert principals.resolve(session, key, "Bearer not-a-token").method == "api_key"


def test_resolve_invalid_api_key_is_an_error_not_anonymity(session):
    with pytest.raises(UnauthorizedError):
        principals.resolve(session, "wrong", None)
    with pytest.raises(UnauthorizedError):
        principals.resolve(session, "", None)


def test_resolve_bearer(session):
    from chalicelib.auth import oauth2
    from chalicelib.models import OAuth2Token, utcnow

    client = oauth2.create_client(
        session,
        client_name="app",
        scope=frozenset({"workflow.read"}),
        grant_types=("client_credentials",),
    ).client
    now = utcnow()
    session.add(
        OAuth2Token(
            client_id=client.client_id,
            access_token_hash=token_hash("tok"),
            scope="workflow.read",
            issued_at=now,
            expires_at=now + timedelta(hours=1),
        )
    )
    session.flush()
    for header in ("Bearer tok", "bearer  tok ", "BEARER tok"):
        p = principals.resolve(session, None, header)
        assert p.method == "oauth2" and p.client_id == client.client_id, header
    with pytest.raises(UnauthorizedError):
        principals.resolve(session, None, "Bearer other")
