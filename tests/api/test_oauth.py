"""POST /oauth2/token as WorkflowHub calls it (contract §10), its errors, and the life of
the tokens it issues."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta

import pytest

from tests.api.helpers import assert_problem, form

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def header(response, name: str) -> str | None:
    return {k.lower(): v for k, v in response.headers.items()}.get(name.lower())


def token_rows(session) -> list:
    from chalicelib.models import OAuth2Token

    session.expire_all()
    return session.query(OAuth2Token).all()


def wfh_request(registry, **overrides) -> bytes:
    from chalicelib.auth import scopes as S

    fields = {
        "client_id": registry.client_id,
        "client_secret": registry.client_secret,
        "grant_type": "client_credentials",
        "scope": S.WORKFLOWHUB_REQUEST,
    }
    fields.update(overrides)
    return form(**{k: v for k, v in fields.items() if v is not None})


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def test_workflowhub_token_call(client, registry, session):
    from chalicelib.auth import scopes as S

    r = client.http.post("/oauth2/token", headers=FORM, body=wfh_request(registry))
    assert r.status_code == 200, r.body
    body = r.json_body
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int) and body["expires_in"] == 86400
    assert isinstance(body["access_token"], str) and len(body["access_token"]) >= 32
    requested = S.WORKFLOWHUB_REQUEST.split()
    assert len(requested) == 12
    assert set(requested) <= set(body["scope"].split())
    assert header(r, "Cache-Control") == "no-store"
    assert header(r, "Pragma") == "no-cache"
    # Stored once, hashed, with the granted scope.
    [row] = token_rows(session)
    assert row.client_id == registry.client_id
    assert row.access_token_hash == hashlib.sha256(body["access_token"].encode()).hexdigest()
    assert body["access_token"] not in (row.access_token_hash, row.scope)
    assert set(requested) <= row.scopes
    assert row.user_id is None
    assert not row.revoked
    assert (row.expires_at - row.issued_at) == timedelta(seconds=86400)


def test_charset_in_content_type_is_accepted(client, registry):
    r = client.http.post(
        "/oauth2/token",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        body=wfh_request(registry),
    )
    assert r.status_code == 200, r.body


def test_each_call_issues_a_fresh_token(client, registry, session):
    a = client.http.post("/oauth2/token", headers=FORM, body=wfh_request(registry)).json_body
    b = client.http.post("/oauth2/token", headers=FORM, body=wfh_request(registry)).json_body
    assert a["access_token"] != b["access_token"]
    assert len(token_rows(session)) == 2
    for token in (a["access_token"], b["access_token"]):
        r = client.http.get("/registries/current", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.body


def test_client_secret_basic(client, registry, session):
    r = client.http.post(
        "/oauth2/token",
        headers={**FORM, **basic(registry.client_id, registry.client_secret)},
        body=form(grant_type="client_credentials", scope="registry.info"),
    )
    assert r.status_code == 200, r.body
    assert r.json_body["scope"] == "registry.info"
    r = client.http.get(
        "/registries/current", headers={"Authorization": f"Bearer {r.json_body['access_token']}"}
    )
    assert r.status_code == 200, r.body
    assert len(token_rows(session)) == 1


def test_no_scope_grants_every_allowed_scope(client, registry):
    from chalicelib.auth import scopes as S

    r = client.http.post("/oauth2/token", headers=FORM, body=wfh_request(registry, scope=None))
    assert r.status_code == 200, r.body
    assert set(r.json_body["scope"].split()) == S.REGISTRY_CLIENT


def test_narrower_scope_is_granted_as_asked(client, registry):
    r = client.http.post(
        "/oauth2/token",
        headers=FORM,
        body=wfh_request(registry, scope="workflow.read registry.info"),
    )
    assert r.status_code == 200, r.body
    assert set(r.json_body["scope"].split()) == {"workflow.read", "registry.info"}


# --- errors --------------------------------------------------------------------------------


def _errors(registry):
    return {
        "wrong-secret": (
            FORM,
            wfh_request(registry, client_secret="not-the-secret"),
            {"invalid_client"},
        ),
        "wrong-secret-basic": (
            {**FORM, **basic(registry.client_id, "nope")},
            form(grant_type="client_credentials"),
            {"invalid_client"},
        ),
        "unknown-client": (
            FORM,
            wfh_request(registry, client_id="no-such-client"),
            {"invalid_client"},
        ),
        "no-secret": (FORM, wfh_request(registry, client_secret=None), {"invalid_client"}),
        "missing-grant-type": (
            FORM,
            wfh_request(registry, grant_type=None),
            {"invalid_request", "unsupported_grant_type"},
        ),
        "unsupported-grant-type": (
            FORM,
            wfh_request(registry, grant_type="password"),
            {"unsupported_grant_type"},
        ),
        "unknown-grant-type": (
            FORM,
            wfh_request(registry, grant_type="magic"),
            {"unsupported_grant_type"},
        ),
        "unknown-scope": (
            FORM,
            wfh_request(registry, scope="registry.info no.such.scope"),
            {"invalid_scope"},
        ),
        "empty-body": (FORM, b"", {"invalid_request", "unsupported_grant_type"}),
    }


ERROR_CASES = [
    "wrong-secret",
    "wrong-secret-basic",
    "unknown-client",
    "no-secret",
    "missing-grant-type",
    "unsupported-grant-type",
    "unknown-grant-type",
    "unknown-scope",
    "empty-body",
]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_token_errors_are_problem_and_oauth2(client, registry, session, case):
    headers, body, expected_errors = _errors(registry)[case]
    r = client.http.post("/oauth2/token", headers=headers, body=body)
    assert r.status_code in (400, 401), r.body
    problem = assert_problem(r, r.status_code)
    assert problem["error"] in expected_errors
    assert isinstance(problem["error_description"], str) and problem["error_description"]
    assert problem["detail"] == problem["error_description"]
    assert problem["instance"] == "http://lm.test/oauth2/token"
    assert header(r, "Cache-Control") == "no-store"
    if r.status_code == 401:  # RFC 6749 §5.2
        assert problem["error"] == "invalid_client"
        assert header(r, "WWW-Authenticate")
    assert "access_token" not in problem
    assert registry.client_secret not in r.body.decode()
    assert token_rows(session) == []


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe\x00garbage", b"grant_type=client_credentials&client_id=\xe9"],
    ids=["binary", "latin1"],
)
def test_non_utf8_body_is_400_problem(client, registry, session, body):
    r = client.http.post("/oauth2/token", headers=FORM, body=body)
    problem = assert_problem(r, 400)
    assert "UTF-8" in problem["detail"]
    assert token_rows(session) == []


@pytest.mark.parametrize(
    "body", [b"\xff\xfe\x00garbage", b"grant_type=x&&&=="], ids=["non-utf8", "not-form"]
)
def test_undecodable_body_has_oauth2_error(client, registry, body):
    r = client.http.post("/oauth2/token", headers=FORM, body=body)
    problem = assert_problem(r, 400)
    assert problem["error"] == "invalid_request"
    assert problem["error_description"]
    assert header(r, "Cache-Control") == "no-store"


def test_client_credentials_for_another_client_secret_fails(client, registry, session):
    """A registry cannot use another registry's secret with its own id."""
    from chalicelib.db import session_scope
    from chalicelib.services import registries

    with session_scope() as s:
        other = registries.add_registry(
            s,
            name="Other",
            type="seek",
            client_id="o",
            client_secret="o-secret",
            api_url="https://other.example",
        )
    r = client.http.post(
        "/oauth2/token", headers=FORM, body=wfh_request(registry, client_secret=other.client_secret)
    )
    assert assert_problem(r, 401)["error"] == "invalid_client"
    assert token_rows(session) == []


# --- token lifetime ------------------------------------------------------------------------


def test_expired_token_is_401(client, registry, session, monkeypatch):
    from chalicelib.models import OAuth2Token, utcnow

    monkeypatch.setenv("LM_TOKEN_EXPIRES_IN", "60")
    r = client.http.post("/oauth2/token", headers=FORM, body=wfh_request(registry))
    assert r.status_code == 200, r.body
    assert r.json_body["expires_in"] == 60
    token = r.json_body["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    [row] = token_rows(session)
    assert row.expires_at - row.issued_at == timedelta(seconds=60)
    assert client.http.get("/registries/current", headers=auth).status_code == 200

    session.query(OAuth2Token).update({"expires_at": utcnow() - timedelta(seconds=1)})
    session.commit()
    r = client.http.get("/registries/current", headers=auth)
    body = assert_problem(r, 401)
    assert "expired" in body["detail"]
    assert header(r, "WWW-Authenticate")
    # An expired token is an error even on public routes, not silent anonymity.
    assert_problem(client.http.get("/registries", headers=auth), 401)


def test_revoked_token_is_401(client, registry, registry_token, session):
    from chalicelib.models import OAuth2Token

    session.query(OAuth2Token).update({"revoked": True})
    session.commit()
    r = client.http.get(
        "/registries/current", headers={"Authorization": f"Bearer {registry_token}"}
    )
    assert_problem(r, 401)


def test_deleted_registry_token_stops_working(client, registry, registry_token, session):
    from chalicelib.db import session_scope
    from chalicelib.services import registries

    auth = {"Authorization": f"Bearer {registry_token}"}
    assert client.http.get("/registries/current", headers=auth).status_code == 200
    with session_scope() as s:
        registries.delete_registry(s, "WorkflowHub")
    assert_problem(client.http.get("/registries/current", headers=auth), 401)
    assert token_rows(session) == []
    # ... and its credentials cannot get a new one.
    r = client.http.post("/oauth2/token", headers=FORM, body=wfh_request(registry))
    assert assert_problem(r, r.status_code)["error"] == "invalid_client"
    assert client.http.get("/registries").json_body["items"] == []


def test_rotated_secret_replaces_the_old_one(client, registry, session):
    from chalicelib.db import session_scope
    from chalicelib.services import registries

    with session_scope() as s:
        new = registries.update_registry(s, "WorkflowHub", rotate_secret=True)
    assert new.client_secret and new.client_secret != registry.client_secret
    r = client.http.post("/oauth2/token", headers=FORM, body=wfh_request(registry))
    assert assert_problem(r, 401)["error"] == "invalid_client"
    r = client.http.post(
        "/oauth2/token", headers=FORM, body=wfh_request(registry, client_secret=new.client_secret)
    )
    assert r.status_code == 200, r.body
