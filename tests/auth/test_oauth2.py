"""Our OAuth2 server: clients, the client_credentials token endpoint, bearer tokens."""

from __future__ import annotations

import base64
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from chalicelib.auth import oauth2
from chalicelib.auth import scopes as S
from chalicelib.auth.hashing import token_hash
from chalicelib.errors import BadRequestError, UnauthorizedError
from chalicelib.models import OAuth2Client, OAuth2Token, utcnow
from chalicelib.services import registries, users

TOKEN_URI = "https://lm.test/oauth2/token"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def wfh(session):
    """A registered WorkflowHub: its credentials, with our client's plaintext secret."""
    return registries.add_registry(
        session,
        name="WorkflowHub",
        type="seek",
        client_id="wfh-app",
        client_secret="wfh-secret",
        api_url="https://workflowhub.example",
        redirect_uris="https://workflowhub.example",
    )


def _tokens(session) -> int:
    return session.execute(select(func.count()).select_from(OAuth2Token)).scalar_one()


def _post(session, headers=None, **fields):
    return oauth2.token_endpoint(
        session, uri=TOKEN_URI, headers={**FORM, **(headers or {})}, body=urlencode(fields).encode()
    )


def _basic(client_id: str, secret: str) -> dict:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


# --- clients ----------------------------------------------------------------------------


def test_create_client(session):
    new = oauth2.create_client(
        session,
        client_name="app",
        scope=frozenset({"workflow.read", "user.profile"}),
        grant_types=("client_credentials",),
        redirect_uris=["https://app.example/cb"],
        auth_method="client_secret_basic",
        client_uri="https://app.example",
    )
    c = new.client
    assert len(c.client_id) == 24
    assert len(new.client_secret) == 48
    assert c.client_secret_hash == token_hash(new.client_secret)
    assert c.scope == "user.profile workflow.read"
    assert c.grant_types == ["client_credentials"]
    assert c.redirect_uris == ["https://app.example/cb"]
    assert c.token_endpoint_auth_method == "client_secret_basic"
    assert c.client_metadata["client_uri"] == "https://app.example"
    assert c.client_metadata["client_name"] == "app"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"auth_method": "none"}, "client auth method"),
        ({"auth_method": "private_key_jwt"}, "client auth method"),
        ({"redirect_uris": ["ftp://x.example/cb"]}, "redirect URI"),
        ({"redirect_uris": ["/relative"]}, "redirect URI"),
        ({"redirect_uris": ["https://ok.example", "https://"]}, "redirect URI"),
    ],
)
def test_create_client_validation(session, kwargs, match):
    with pytest.raises(BadRequestError, match=match):
        oauth2.create_client(
            session,
            client_name="bad",
            scope=frozenset({"workflow.read"}),
            grant_types=("client_credentials",),
            **kwargs,
        )
    assert session.execute(select(func.count()).select_from(OAuth2Client)).scalar_one() == 0


def test_rotate_secret(session):
    new = oauth2.create_client(
        session, client_name="app", scope=frozenset(), grant_types=("client_credentials",)
    )
    secret = oauth2.rotate_secret(session, new.client)
    assert secret != new.client_secret
    assert new.client.client_secret_hash == token_hash(secret)


# --- token endpoint ---------------------------------------------------------------------


def test_client_secret_post(session, wfh):
    r = _post(
        session,
        grant_type="client_credentials",
        client_id=wfh.client_id,
        client_secret=wfh.client_secret,
    )
    assert r.status == 200, r.body
    assert r.body["token_type"] == "Bearer"
    assert r.body["expires_in"] == 86400
    assert "refresh_token" not in r.body
    assert S.parse(r.body["scope"]) == S.REGISTRY_CLIENT  # no scope asked: all allowed
    assert _tokens(session) == 1


def test_client_secret_basic(session, wfh):
    r = _post(
        session,
        _basic(wfh.client_id, wfh.client_secret),
        grant_type="client_credentials",
        scope="workflow.read",
    )
    assert r.status == 200, r.body
    assert r.body["scope"] == "workflow.read"
    token = session.query(OAuth2Token).one()
    assert token.scope == "workflow.read"
    assert token.client_id == wfh.client_id


def test_workflowhub_scope_string_is_granted_whole(session, wfh):
    r = _post(
        session,
        grant_type="client_credentials",
        client_id=wfh.client_id,
        client_secret=wfh.client_secret,
        scope=S.WORKFLOWHUB_REQUEST,
    )
    assert r.status == 200, r.body
    asked = set(S.WORKFLOWHUB_REQUEST.split())
    assert len(asked) == 12
    assert set(r.body["scope"].split()) == asked
    assert session.query(OAuth2Token).one().scopes == asked


def test_token_lifetime_follows_settings(session, wfh, monkeypatch):
    monkeypatch.setenv("LM_TOKEN_EXPIRES_IN", "120")
    r = _post(
        session,
        grant_type="client_credentials",
        client_id=wfh.client_id,
        client_secret=wfh.client_secret,
    )
    assert r.body["expires_in"] == 120
    token = session.query(OAuth2Token).one()
    assert token.expires_at - token.issued_at == timedelta(seconds=120)


def test_scope_not_allowed_for_the_client_is_dropped(session, wfh):
    r = _post(
        session,
        grant_type="client_credentials",
        client_id=wfh.client_id,
        client_secret=wfh.client_secret,
        scope="workflow.read user.workflow.write",
    )
    assert r.status == 200, r.body
    assert r.body["scope"] == "workflow.read"


def test_unknown_scope_is_invalid_scope_and_no_token(session, wfh):
    r = _post(
        session,
        grant_type="client_credentials",
        client_id=wfh.client_id,
        client_secret=wfh.client_secret,
        scope="workflow.read workflow.delete",
    )
    assert r.status == 400
    assert r.body["error"] == "invalid_scope"
    assert _tokens(session) == 0


@pytest.mark.parametrize("how", ["post", "basic"])
def test_wrong_secret_is_invalid_client_and_no_token(session, wfh, how):
    if how == "post":
        r = _post(
            session, grant_type="client_credentials", client_id=wfh.client_id, client_secret="wrong"
        )
    else:
        r = _post(session, _basic(wfh.client_id, "wrong"), grant_type="client_credentials")
    assert r.status == 401
    assert r.body["error"] == "invalid_client"
    assert _tokens(session) == 0


def test_unknown_client_is_invalid_client(session, wfh):
    r = _post(
        session,
        grant_type="client_credentials",
        client_id="nobody",
        client_secret=wfh.client_secret,
    )
    assert r.status in (400, 401)  # RFC 6749 §5.2: 401 is required only for Basic auth
    assert r.body["error"] == "invalid_client"
    assert _tokens(session) == 0


def test_no_client_credentials_is_invalid_client(session, wfh):
    r = _post(session, grant_type="client_credentials")
    assert r.status == 401
    assert r.body["error"] == "invalid_client"


@pytest.mark.parametrize("grant", ["password", "authorization_code_x", ""])
def test_unsupported_grant_type(session, wfh, grant):
    r = _post(session, grant_type=grant, client_id=wfh.client_id, client_secret=wfh.client_secret)
    assert r.status == 400
    assert r.body["error"] == "unsupported_grant_type"
    assert _tokens(session) == 0


def test_client_without_the_grant_is_unauthorized_client(session):
    new = oauth2.create_client(
        session,
        client_name="codeonly",
        scope=frozenset({"user.profile"}),
        grant_types=("authorization_code",),
    )
    r = _post(
        session,
        grant_type="client_credentials",
        client_id=new.client.client_id,
        client_secret=new.client_secret,
    )
    assert r.status == 400
    assert r.body["error"] == "unauthorized_client"
    assert _tokens(session) == 0


def test_body_must_be_form_encoded_utf8(session, wfh):
    with pytest.raises(BadRequestError, match="UTF-8"):
        oauth2.token_endpoint(session, uri=TOKEN_URI, headers=FORM, body=b"\xff\xfe")
    with pytest.raises(BadRequestError, match="form-encoded"):
        oauth2.token_endpoint(session, uri=TOKEN_URI, headers=FORM, body="not a form")


def test_tokens_are_stored_hashed(session, wfh):
    r = _post(
        session,
        grant_type="client_credentials",
        client_id=wfh.client_id,
        client_secret=wfh.client_secret,
    )
    access = r.body["access_token"]
    assert len(access) >= 32
    token = session.query(OAuth2Token).one()
    assert token.access_token_hash == token_hash(access)
    for table in ("oauth2_tokens", "oauth2_clients", "registries"):
        rows = session.execute(select(OAuth2Token.metadata.tables[table])).all()
        text = repr(rows)
        assert access not in text, table
        assert wfh.client_secret not in text, table


# --- bearer authentication --------------------------------------------------------------


def _issue(session, wfh, **fields) -> str:
    r = _post(
        session,
        grant_type="client_credentials",
        client_id=wfh.client_id,
        client_secret=wfh.client_secret,
        **fields,
    )
    assert r.status == 200, r.body
    return r.body["access_token"]


def test_authenticate_valid_token_resolves_the_registry(session, wfh):
    access = _issue(session, wfh, scope=S.WORKFLOWHUB_REQUEST)
    p = oauth2.authenticate(session, access)
    assert p.method == "oauth2"
    assert p.client_id == wfh.client_id
    assert p.registry_id == wfh.registry.id
    assert p.registry_uuid == wfh.registry.uuid
    assert p.is_registry and not p.is_user
    assert p.scopes == frozenset(S.WORKFLOWHUB_REQUEST.split())


def test_authenticate_expired_token(session, wfh):
    access = _issue(session, wfh)
    session.query(OAuth2Token).one().expires_at = utcnow() - timedelta(seconds=1)
    session.flush()
    with pytest.raises(UnauthorizedError):
        oauth2.authenticate(session, access)


def test_authenticate_revoked_token(session, wfh):
    access = _issue(session, wfh)
    session.query(OAuth2Token).one().revoked = True
    session.flush()
    with pytest.raises(UnauthorizedError):
        oauth2.authenticate(session, access)


@pytest.mark.parametrize("token", ["", "unknown", "x" * 43])
def test_authenticate_unknown_token(session, wfh, token):
    _issue(session, wfh)
    with pytest.raises(UnauthorizedError) as info:
        oauth2.authenticate(session, token)
    assert info.value.status == 401


def test_token_of_a_plain_client_has_no_registry(session):
    new = oauth2.create_client(
        session,
        client_name="app",
        scope=frozenset({"workflow.read"}),
        grant_types=("client_credentials",),
    )
    r = _post(
        session,
        grant_type="client_credentials",
        client_id=new.client.client_id,
        client_secret=new.client_secret,
    )
    assert r.status == 200, r.body
    p = oauth2.authenticate(session, r.body["access_token"])
    assert p.registry_id is None and not p.is_registry
    assert p.scopes == {"workflow.read"}


def test_token_with_a_user(session, wfh):
    alice = users.create_user(session, "alice")
    now = utcnow()
    session.add(
        OAuth2Token(
            client_id=wfh.client_id,
            user_id=alice.id,
            access_token_hash=token_hash("user-token"),
            scope="user.profile",
            issued_at=now,
            expires_at=now + timedelta(hours=1),
        )
    )
    session.flush()
    p = oauth2.authenticate(session, "user-token")
    assert (p.user_id, p.username, p.registry_id) == (alice.id, "alice", wfh.registry.id)
    assert p.is_user and p.is_registry


def test_client_credentials_of_a_users_client_act_as_its_owner_a_registrys_never(session, wfh):
    alice = users.create_user(session, "alice")
    new = oauth2.create_client(
        session,
        client_name="script",
        scope=frozenset({"user.profile"}),
        grant_types=("client_credentials",),
        owner=alice,
    )
    r = _post(
        session,
        grant_type="client_credentials",
        client_id=new.client.client_id,
        client_secret=new.client_secret,
    )
    assert r.status == 200, r.body
    p = oauth2.authenticate(session, r.body["access_token"])
    assert (p.user_id, p.username, p.is_registry) == (alice.id, "alice", False)
    assert p.scopes == {"user.profile"}
    # A registry's client acts for no user, even were it owned by one.
    session.query(OAuth2Client).filter_by(client_id=wfh.client_id).one().user_id = alice.id
    session.flush()
    r = _post(
        session,
        grant_type="client_credentials",
        client_id=wfh.client_id,
        client_secret=wfh.client_secret,
    )
    assert r.status == 200, r.body
    p = oauth2.authenticate(session, r.body["access_token"])
    assert p.is_registry and p.user_id is None and not p.is_user
