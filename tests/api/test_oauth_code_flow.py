"""The authorization-code grant (PKCE, consent, refresh, revocation) through the Chalice
test client, and every refusal the issue names: wrong PKCE verifier, reused code,
mismatched redirect URI, expired code, token of a deleted or rotated client, forged session
cookie, cross-site form post — each with a clear error and nothing changed."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.api.helpers import form

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
REDIRECT = "https://app.example/callback"


def header(response, name: str) -> str | None:
    return {k.lower(): v for k, v in response.headers.items()}.get(name.lower())


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Browser:
    """A signed-in person's cookie and CSRF token (made as the web session makes them)."""

    def __init__(self, user_id: int) -> None:
        from chalicelib.web.session import WebSession, csrf_token, login, session_cookie

        self.session = WebSession()
        login(self.session, user_id)
        self.csrf = csrf_token(self.session)
        self.cookie = session_cookie(self.session).split(";")[0]

    @property
    def headers(self) -> dict[str, str]:
        return {"Cookie": self.cookie}


@pytest.fixture
def person(user):
    return Browser(user.id)


@pytest.fixture
def app_client(user):
    """A public OAuth app of alice's (auth method none: PKCE required)."""
    from chalicelib.auth import oauth2
    from chalicelib.auth import scopes as S
    from chalicelib.db import session_scope
    from chalicelib.models import User

    with session_scope() as s:
        new = oauth2.create_client(
            s,
            client_name="My notebook",
            scope=S.AUTHORIZATION_CODE_FLOW,
            grant_types=oauth2.APP_GRANT_TYPES,
            response_types=oauth2.APP_RESPONSE_TYPES,
            redirect_uris=[REDIRECT],
            auth_method="none",
            owner=s.get(User, user.id),
        )
        return new.client.client_id


@pytest.fixture
def confidential_client(user):
    from chalicelib.auth import oauth2
    from chalicelib.auth import scopes as S
    from chalicelib.db import session_scope
    from chalicelib.models import User

    with session_scope() as s:
        new = oauth2.create_client(
            s,
            client_name="Server app",
            scope=S.AUTHORIZATION_CODE_FLOW,
            grant_types=oauth2.APP_GRANT_TYPES,
            response_types=oauth2.APP_RESPONSE_TYPES,
            redirect_uris=[REDIRECT, "https://app.example/other"],
            auth_method="client_secret_basic",
            owner=s.get(User, user.id),
        )
        return new.client.client_id, new.client_secret


def authorize_query(client_id: str, challenge: str | None = None, **extra) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": "user.profile workflow.read",
        "state": "st-42",
    }
    if challenge:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    params.update(extra)
    return "/oauth2/authorize?" + urlencode({k: v for k, v in params.items() if v is not None})


def consent(client, person, query: str, confirm: str = "yes", **form_overrides):
    """Show the consent page, then answer it as the person would."""
    page = client.http.get(query, headers=person.headers)
    assert page.status_code == 200, page.body
    fields = dict(parse_qs(urlsplit(query).query, keep_blank_values=True))
    data = {k: v[0] for k, v in fields.items()}
    data.update(csrf_token=person.csrf, confirm=confirm)
    data.update(form_overrides)
    data = {k: v for k, v in data.items() if v is not None}
    return page, client.http.post(
        "/oauth2/authorize", headers={**FORM, **person.headers}, body=form(**data)
    )


def code_from(response) -> str:
    assert response.status_code == 302, response.body
    location = header(response, "Location")
    assert location.startswith(REDIRECT + "?"), location
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["st-42"]
    return query["code"][0]


def exchange(client, code: str, verifier: str | None, client_id: str, **extra):
    fields = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": client_id,
        "code_verifier": verifier,
        **extra,
    }
    return client.http.post(
        "/oauth2/token", headers=FORM, body=form(**{k: v for k, v in fields.items() if v})
    )


def rows(model):
    from chalicelib.db import session_scope

    with session_scope() as s:
        return s.query(model).all()


def me(client, access_token: str):
    return client.http.get("/users/current", headers={"Authorization": f"Bearer {access_token}"})


# --- the happy path ---------------------------------------------------------------------------


def test_public_client_consent_pkce_tokens_refresh(client, person, app_client):
    from chalicelib.models import OAuth2AuthorizationCode, OAuth2Token

    verifier, challenge = pkce()
    page, answer = consent(client, person, authorize_query(app_client, challenge))
    text = page.body.decode()
    assert "My notebook" in text
    assert "Read the current user&#39;s profile" in text  # scope descriptions, escaped
    assert "Read workflows, their suites, instances and builds" in text
    assert "workflow.write" not in text  # only what was asked for
    code = code_from(answer)
    [stored] = rows(OAuth2AuthorizationCode)
    assert stored.code_hash == hashlib.sha256(code.encode()).hexdigest()
    assert stored.code_challenge_method == "S256"

    r = exchange(client, code, verifier, app_client)
    assert r.status_code == 200, r.body
    tokens = r.json_body
    assert set(tokens["scope"].split()) == {"user.profile", "workflow.read"}
    assert tokens["expires_in"] == 86400
    assert me(client, tokens["access_token"]).json_body["username"] == "alice"

    r = client.http.post(
        "/oauth2/token",
        headers=FORM,
        body=form(
            grant_type="refresh_token", refresh_token=tokens["refresh_token"], client_id=app_client
        ),
    )
    assert r.status_code == 200, r.body
    assert r.json_body["refresh_token"] != tokens["refresh_token"]
    assert me(client, tokens["access_token"]).status_code == 401  # rotated away
    assert me(client, r.json_body["access_token"]).status_code == 200
    live = [t for t in rows(OAuth2Token) if not t.revoked]
    assert len(live) == 1 and live[0].code_hash == stored.code_hash


def test_lifetimes_are_configurable(client, person, app_client, monkeypatch):
    from chalicelib.models import OAuth2AuthorizationCode, OAuth2Token

    monkeypatch.setenv("LM_TOKEN_EXPIRES_IN", "600")
    monkeypatch.setenv("LM_REFRESH_TOKEN_EXPIRES_IN", "7200")
    monkeypatch.setenv("LM_AUTH_CODE_EXPIRES_IN", "30")
    verifier, challenge = pkce()
    code = code_from(consent(client, person, authorize_query(app_client, challenge))[1])
    [c] = rows(OAuth2AuthorizationCode)
    assert c.expires_at - c.auth_time == timedelta(seconds=30)
    r = exchange(client, code, verifier, app_client)
    assert r.json_body["expires_in"] == 600
    [t] = rows(OAuth2Token)
    assert t.expires_at - t.issued_at == timedelta(seconds=600)
    assert t.refresh_expires_at - t.issued_at == timedelta(seconds=7200)


def test_consent_is_skipped_once_granted(client, person, app_client):
    verifier, challenge = pkce()
    code = code_from(consent(client, person, authorize_query(app_client, challenge))[1])
    assert exchange(client, code, verifier, app_client).status_code == 200
    verifier, challenge = pkce()
    again = client.http.get(authorize_query(app_client, challenge), headers=person.headers)
    assert exchange(client, code_from(again), verifier, app_client).status_code == 200
    # A wider scope than granted asks again.
    wider = client.http.get(
        authorize_query(app_client, challenge, scope="user.profile workflow.write"),
        headers=person.headers,
    )
    assert wider.status_code == 200 and b"Change and delete workflows" in wider.body


def test_registry_clients_skip_consent(client, registry, user, person):
    r = client.http.get(
        "/oauth2/authorize?"
        + urlencode(
            {
                "response_type": "code",
                "client_id": registry.client_id,
                "redirect_uri": "https://workflowhub.example",
            }
        ),
        headers=person.headers,
    )
    assert r.status_code == 302
    assert header(r, "Location").startswith("https://workflowhub.example?code=")


def test_deny_sends_access_denied_and_issues_nothing(client, person, app_client):
    from chalicelib.models import OAuth2AuthorizationCode

    _page, answer = consent(client, person, authorize_query(app_client, pkce()[1]), "no")
    assert answer.status_code == 302
    query = parse_qs(urlsplit(header(answer, "Location")).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["st-42"]
    assert rows(OAuth2AuthorizationCode) == []


def test_signed_out_person_is_sent_to_login(client, app_client):
    query = authorize_query(app_client, pkce()[1])
    r = client.http.get(query)
    assert r.status_code == 303
    location = header(r, "Location")
    assert location.startswith("/account/login?")
    assert parse_qs(urlsplit(location).query)["next"] == [query]


# --- refusals ---------------------------------------------------------------------------------


def test_wrong_pkce_verifier_is_refused_and_changes_nothing(client, person, app_client):
    from chalicelib.models import OAuth2AuthorizationCode, OAuth2Token

    verifier, challenge = pkce()
    code = code_from(consent(client, person, authorize_query(app_client, challenge))[1])
    r = exchange(client, code, pkce()[0], app_client)
    assert r.status_code == 400
    assert r.json_body["error"] == "invalid_grant"
    assert "challenge" in r.json_body["error_description"].lower()
    assert rows(OAuth2Token) == []
    assert rows(OAuth2AuthorizationCode)[0].used_at is None  # not consumed by the failure
    r = exchange(client, code, None, app_client)
    assert r.status_code == 400 and "code_verifier" in r.json_body["error_description"]
    assert exchange(client, code, verifier, app_client).status_code == 200


def test_public_client_must_use_s256_pkce(client, person, app_client):
    from chalicelib.models import OAuth2AuthorizationCode

    for extra in (
        {},
        {"code_challenge": "a" * 43, "code_challenge_method": "plain"},
    ):
        r = client.http.get(authorize_query(app_client, **extra), headers=person.headers)
        assert r.status_code == 302, r.body
        query = parse_qs(urlsplit(header(r, "Location")).query)
        assert query["error"] == ["invalid_request"], query
        assert rows(OAuth2AuthorizationCode) == []


def test_reused_code_is_refused_and_revokes_its_tokens(client, person, app_client):
    verifier, challenge = pkce()
    code = code_from(consent(client, person, authorize_query(app_client, challenge))[1])
    first = exchange(client, code, verifier, app_client)
    assert first.status_code == 200
    again = exchange(client, code, verifier, app_client)
    assert again.status_code == 400
    assert again.json_body["error"] == "invalid_grant"
    assert "already used" in again.json_body["error_description"]
    assert me(client, first.json_body["access_token"]).status_code == 401
    r = client.http.post(
        "/oauth2/token",
        headers=FORM,
        body=form(
            grant_type="refresh_token",
            refresh_token=first.json_body["refresh_token"],
            client_id=app_client,
        ),
    )
    assert r.status_code == 400


def test_mismatched_redirect_uri(client, person, confidential_client):
    from chalicelib.models import OAuth2AuthorizationCode

    client_id, secret = confidential_client
    # At the authorization endpoint: an unregistered URI (even a prefix match) gets our
    # own error page, never a redirect to it.
    for uri in ("https://evil.example/callback", REDIRECT + "/x", REDIRECT + "?a=1"):
        r = client.http.get(authorize_query(client_id, redirect_uri=uri), headers=person.headers)
        assert r.status_code == 400, uri
        assert header(r, "Location") is None
        assert b"not supported by client" in r.body
    # Several registered URIs: the request must name one.
    r = client.http.get(authorize_query(client_id, redirect_uri=None), headers=person.headers)
    assert r.status_code == 400 and header(r, "Location") is None
    assert rows(OAuth2AuthorizationCode) == []
    # At the token endpoint: the code is bound to the URI it was issued for.
    code = code_from(consent(client, person, authorize_query(client_id))[1])
    basic = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    fields = {"grant_type": "authorization_code", "code": code}
    for uri in ("https://app.example/other", None):
        body = form(**fields, **({"redirect_uri": uri} if uri else {}))
        r = client.http.post("/oauth2/token", headers={**FORM, "Authorization": basic}, body=body)
        assert r.status_code == 400 and r.json_body["error"] == "invalid_grant"
    body = form(**fields, redirect_uri=REDIRECT)
    r = client.http.post("/oauth2/token", headers={**FORM, "Authorization": basic}, body=body)
    assert r.status_code == 200, r.body


def test_expired_code_is_refused(client, person, app_client):
    from sqlalchemy import update

    from chalicelib.db import session_scope
    from chalicelib.models import OAuth2AuthorizationCode, OAuth2Token, utcnow

    verifier, challenge = pkce()
    code = code_from(consent(client, person, authorize_query(app_client, challenge))[1])
    with session_scope() as s:
        s.execute(
            update(OAuth2AuthorizationCode).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    r = exchange(client, code, verifier, app_client)
    assert r.status_code == 400
    assert r.json_body["error"] == "invalid_grant"
    assert "expired" in r.json_body["error_description"]
    assert rows(OAuth2Token) == []


def test_tokens_of_a_rotated_or_deleted_client_are_refused(client, registry, registry_token):
    from chalicelib.db import session_scope
    from chalicelib.services import registries

    bearer = {"Authorization": f"Bearer {registry_token}"}
    assert client.http.get("/registries/current", headers=bearer).status_code == 200
    with session_scope() as s:
        new_secret = registries.update_registry(s, "WorkflowHub", rotate_secret=True).client_secret
    assert new_secret != registry.client_secret
    assert client.http.get("/registries/current", headers=bearer).status_code == 401
    old = client.http.post(
        "/oauth2/token",
        headers=FORM,
        body=form(
            grant_type="client_credentials",
            client_id=registry.client_id,
            client_secret=registry.client_secret,
        ),
    )
    assert old.status_code == 401 and old.json_body["error"] == "invalid_client"
    fresh = client.http.post(
        "/oauth2/token",
        headers=FORM,
        body=form(
            grant_type="client_credentials",
            client_id=registry.client_id,
            client_secret=new_secret,
        ),
    ).json_body["access_token"]
    fresh_bearer = {"Authorization": f"Bearer {fresh}"}
    assert client.http.get("/registries/current", headers=fresh_bearer).status_code == 200
    with session_scope() as s:
        registries.delete_registry(s, "WorkflowHub")
    assert client.http.get("/registries/current", headers=fresh_bearer).status_code == 401


def test_deleting_an_app_client_revokes_its_tokens(client, person, app_client):
    from chalicelib.auth import oauth2
    from chalicelib.db import session_scope
    from chalicelib.models import OAuth2Client, OAuth2Token

    verifier, challenge = pkce()
    code = code_from(consent(client, person, authorize_query(app_client, challenge))[1])
    access = exchange(client, code, verifier, app_client).json_body["access_token"]
    with session_scope() as s:
        oauth2.delete_client(s, s.query(OAuth2Client).filter_by(client_id=app_client).one())
    assert me(client, access).status_code == 401
    assert rows(OAuth2Token) == []


def test_forged_session_cookie_is_anonymous(client, person, app_client):
    from chalicelib.models import OAuth2AuthorizationCode

    name, _, value = person.cookie.partition("=")
    payload, _, signature = value.rpartition(".")
    forged = f"{name}={payload}.{'A' * len(signature)}"
    query = authorize_query(app_client, pkce()[1])
    r = client.http.get(query, headers={"Cookie": forged})
    assert r.status_code == 303 and header(r, "Location").startswith("/account/login")
    r = client.http.post(
        "/oauth2/authorize",
        headers={**FORM, "Cookie": forged},
        body=form(csrf_token=person.csrf, confirm="yes", client_id=app_client),
    )
    assert r.status_code == 403
    assert rows(OAuth2AuthorizationCode) == []


def test_cross_site_consent_post_is_refused(client, person, app_client):
    from chalicelib.models import OAuth2AuthorizationCode

    query = authorize_query(app_client, pkce()[1])
    data = {k: v[0] for k, v in parse_qs(urlsplit(query).query).items()}
    # No CSRF token (what a cross-site form can send), a wrong one, or another origin.
    for extra, headers in (
        ({}, {}),
        ({"csrf_token": "guess"}, {}),
        ({"csrf_token": person.csrf}, {"Origin": "https://evil.example"}),
    ):
        r = client.http.post(
            "/oauth2/authorize",
            headers={**FORM, **person.headers, **headers},
            body=form(**data, confirm="yes", **extra),
        )
        assert r.status_code == 403, (extra, headers)
        assert b"text/html" in header(r, "Content-Type").encode()
        assert header(r, "Location") is None
    assert rows(OAuth2AuthorizationCode) == []


@pytest.mark.parametrize("grant_type", ["password", "implicit"])
def test_no_password_or_implicit_grant(client, registry, grant_type):
    r = client.http.post(
        "/oauth2/token",
        headers=FORM,
        body=form(
            grant_type=grant_type,
            username="alice",
            password="correct horse",
            client_id=registry.client_id,
            client_secret=registry.client_secret,
        ),
    )
    assert r.status_code == 400 and r.json_body["error"] == "unsupported_grant_type"


def test_response_type_token_is_refused(client, person, registry):
    r = client.http.get(
        "/oauth2/authorize?"
        + urlencode(
            {
                "response_type": "token",
                "client_id": registry.client_id,
                "redirect_uri": "https://workflowhub.example",
            }
        ),
        headers=person.headers,
    )
    assert r.status_code == 302
    assert "error=unsupported_response_type" in header(r, "Location")
    assert "access_token" not in header(r, "Location")


# --- revocation (RFC 7009) --------------------------------------------------------------------


def test_revocation(client, person, app_client, registry, registry_token):
    verifier, challenge = pkce()
    code = code_from(consent(client, person, authorize_query(app_client, challenge))[1])
    tokens = exchange(client, code, verifier, app_client).json_body

    def revoke(**fields):
        return client.http.post("/oauth2/revoke", headers=FORM, body=form(**fields))

    # Unknown tokens: 200, nothing to learn.
    assert revoke(token="no-such-token", client_id=app_client).status_code == 200
    # Another client's token: refused, and it keeps working.
    r = revoke(token=registry_token, client_id=app_client)
    assert r.status_code == 400
    bearer = {"Authorization": f"Bearer {registry_token}"}
    assert client.http.get("/registries/current", headers=bearer).status_code == 200
    # Without the client's credentials: refused.
    r = revoke(token=registry_token, client_id=registry.client_id, client_secret="wrong")
    assert r.status_code == 401
    # The public client revokes its access token: the grant (refresh included) ends.
    assert revoke(token=tokens["access_token"], client_id=app_client).status_code == 200
    assert me(client, tokens["access_token"]).status_code == 401
    r = client.http.post(
        "/oauth2/token",
        headers=FORM,
        body=form(
            grant_type="refresh_token", refresh_token=tokens["refresh_token"], client_id=app_client
        ),
    )
    assert r.status_code == 400
    assert header(r, "Cache-Control") == "no-store"
