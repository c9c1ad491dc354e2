"""Account pages through the app: local login and registration, logout, profile tabs,
API keys, OAuth apps, notifications, account deletion; CSRF and open redirects refused."""

from __future__ import annotations

import re

import pytest

from tests.web.helpers import Browser, header


@pytest.fixture
def browser(client):
    return Browser(client)


def test_login_page_lists_local_form(browser):
    r = browser.get("/account/login")
    assert r.status_code == 200
    assert 'name="username"' in browser.text() and 'name="csrf_token"' in browser.text()
    assert "lm_session=" in (header(r, "Set-Cookie") or "")
    assert "HttpOnly" in header(r, "Set-Cookie") and "SameSite=Lax" in header(r, "Set-Cookie")


def test_local_login_and_logout(browser, user):
    r = browser.login()
    assert header(r, "Location") == "/account/profile"
    r = browser.get("/account/profile")
    assert r.status_code == 200 and "Profile of alice" in browser.text()
    r = browser.post("/account/logout", {})
    assert r.status_code == 303 and header(r, "Location") == "/"
    r = browser.get("/account/profile")
    assert r.status_code == 303
    assert header(r, "Location") == "/account/login?next=%2Faccount%2Fprofile"


def test_wrong_password_is_refused_with_the_same_message(browser, user):
    browser.get("/account/login")
    r = browser.post("/account/login", {"username": "alice", "password": "wrong password"})
    assert r.status_code == 401 and "Invalid username or password" in browser.text()
    r = browser.post("/account/login", {"username": "bob", "password": "wrong password"})
    assert r.status_code == 401 and "Invalid username or password" in browser.text()


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x"]
)
def test_login_next_never_leaves_our_origin(browser, user, target):
    browser.get("/account/login?next=" + target)
    r = browser.post(
        "/account/login", {"username": "alice", "password": "correct horse", "next": target}
    )
    assert r.status_code == 303 and header(r, "Location") == "/account/profile"
    r = browser.post("/account/logout", {"next": target})
    assert header(r, "Location") == "/"


def test_login_next_keeps_our_page(browser, user):
    browser.get("/account/login")
    r = browser.post(
        "/account/login",
        {"username": "alice", "password": "correct horse", "next": "/dashboard"},
    )
    assert header(r, "Location") == "/dashboard"


def test_login_without_csrf_token_is_refused(browser, user):
    browser.get("/account/login")
    fields = {"username": "alice", "password": "correct horse"}
    r = browser.post("/account/login", fields, csrf=None)
    assert r.status_code == 403
    assert browser.cookie is None or browser.get("/account/profile").status_code == 303


def test_register_local_account_then_conflict(browser, db):
    browser.get("/account/register")
    r = browser.post(
        "/account/register",
        {"username": "carol", "password": "long enough", "confirm": "long enough"},
    )
    assert r.status_code == 303
    assert "Profile of carol" in browser.get("/account/profile").body.decode()
    browser.post("/account/logout", {})
    browser.get("/account/register")
    r = browser.post(
        "/account/register",
        {"username": "carol", "password": "long enough", "confirm": "long enough"},
    )
    assert r.status_code == 409 and "already exists" in browser.text()
    r = browser.post(
        "/account/register", {"username": "dave", "password": "long enough", "confirm": "other"}
    )
    assert r.status_code == 400


def test_local_accounts_are_off_in_prod(monkeypatch):
    from chalicelib.services import accounts

    assert accounts.local_accounts_enabled()
    monkeypatch.setenv("LM_STAGE", "prod")
    assert not accounts.local_accounts_enabled()


def test_no_local_accounts_where_they_are_off(browser, user, monkeypatch):
    from chalicelib.services import accounts

    # The test client sets the stage from .chalice/config.json: turn "test" off instead.
    monkeypatch.setattr(accounts, "NO_LOCAL_ACCOUNTS_STAGES", frozenset({"test"}))
    r = browser.get("/account/login")
    assert r.status_code == 200 and 'name="password"' not in browser.text()
    assert browser.get("/account/register").status_code == 404
    r = browser.post("/account/login", {"username": "alice", "password": "correct horse"})
    assert r.status_code == 403


def test_profile_tabs_render(browser, user):
    browser.login()
    for tab, marker in [
        ("accountsTab", "Delete my account"),
        ("apiKeysTab", "You have no API key"),
        ("oauth2ClientsTab", "oauth2ClientEditorPane"),
        ("notificationsTab", "enable_notifications"),
        ("bogus", "Delete my account"),
    ]:
        r = browser.get(f"/account/profile?currentView={tab}")
        assert r.status_code == 200, tab
        assert marker in browser.text(), tab


def test_api_key_created_shown_once_listed_used_and_deleted(browser, user, client):
    browser.login()
    browser.get("/account/profile?currentView=apiKeysTab")
    r = browser.post("/account/create_apikey", {})
    assert r.status_code == 200
    key = re.search(r'data-testid="new-api-key">([^<]+)<', browser.text()).group(1)
    prefix = key[:8]
    # The key works on the API with the UI's scopes.
    api = client.http.get("/users/current", headers={"ApiKey": key})
    assert api.status_code == 200, api.body
    assert client.http.get("/registries", headers={"ApiKey": key}).status_code == 200
    # Listed by prefix, never again in full.
    page = browser.get("/account/profile?currentView=apiKeysTab").body.decode()
    assert f'data-prefix="{prefix}"' in page and key not in page
    assert "workflow.read" in page and "registry.workflow" not in page
    r = browser.post("/account/delete_apikey", {"apikey": prefix})
    assert r.status_code == 303
    assert client.http.get("/users/current", headers={"ApiKey": key}).status_code == 401


def test_cannot_delete_someone_elses_api_key(browser, user, client):
    from chalicelib.auth import apikeys
    from chalicelib.db import session_scope
    from chalicelib.services import users

    with session_scope() as s:
        bob = users.create_user(s, "bob", password="bob password")
        other = apikeys.create(s, bob)
        other_key, other_prefix = other.key, other.record.prefix
    browser.login()
    browser.get("/account/profile?currentView=apiKeysTab")
    r = browser.post("/account/delete_apikey", {"apikey": other_prefix})
    assert r.status_code == 404
    assert client.http.get("/users/current", headers={"ApiKey": other_key}).status_code == 200


def test_forged_post_changes_nothing(browser, user, client):
    browser.login()
    browser.get("/account/profile?currentView=apiKeysTab")
    r = browser.post("/account/create_apikey", {}, csrf="forged")
    assert r.status_code == 403
    r = browser.post("/account/create_apikey", {}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    page = browser.get("/account/profile?currentView=apiKeysTab").body.decode()
    assert "You have no API key" in page


def test_notifications_email_and_switch(browser, user):
    from chalicelib.db import session_scope
    from chalicelib.services import users

    browser.login()
    browser.get("/account/profile?currentView=notificationsTab")
    assert "a@example.org" in browser.text()
    r = browser.post("/account/set_email", {"email": "new@example.org"})
    assert r.status_code == 303
    page = browser.get("/account/profile?currentView=notificationsTab").body.decode()
    assert "new@example.org" in page and "not verified" in page
    assert "/account/send_verification_email" in page
    r = browser.post("/account/set_email", {"email": "not-an-address"})
    assert r.status_code == 400
    r = browser.post("/account/update_notifications_switch", {})
    assert r.status_code == 303
    with session_scope() as s:
        alice = users.get_user(s, "alice")
        assert alice.email == "new@example.org" and not alice.email_verified
        assert alice.notifications_enabled is False
    browser.get("/account/profile?currentView=notificationsTab")
    browser.post("/account/update_notifications_switch", {"enable_notifications": "on"})
    with session_scope() as s:
        assert users.get_user(s, "alice").notifications_enabled is True


def test_oauth_app_create_edit_rotate_delete(browser, user):
    from chalicelib.db import session_scope
    from chalicelib.models import OAuth2Client

    browser.login()
    browser.get("/account/profile?currentView=oauth2ClientsTab")
    r = browser.post(
        "/account/oauth2/clients/save",
        {
            "client_name": "My app",
            "redirect_uris": "https://app.example/cb\nhttp://127.0.0.1:9/cb",
            "scopes": ["user.profile", "workflow.read"],
        },
    )
    assert r.status_code == 200
    client_id = re.search(r'data-testid="client-id">([^<]+)<', browser.text()).group(1)
    secret = re.search(r'data-testid="client-secret">([^<]+)<', browser.text()).group(1)
    assert len(secret) >= 40
    page = browser.get("/account/profile?currentView=oauth2ClientsTab").body.decode()
    assert client_id in page and secret not in page
    with session_scope() as s:
        c = s.query(OAuth2Client).filter_by(client_id=client_id).one()
        assert c.client_metadata["grant_types"] == ["authorization_code", "refresh_token"]
        assert c.redirect_uris == ["https://app.example/cb", "http://127.0.0.1:9/cb"]
        assert secret not in str(c.client_metadata) and c.client_secret_hash != secret
    browser.get(f"/account/profile?currentView=oauth2ClientsTab&edit={client_id}")
    assert 'value="My app"' in browser.text()
    r = browser.post(
        "/account/oauth2/clients/save",
        {
            "client_id": client_id,
            "client_name": "Renamed",
            "redirect_uris": "https://app.example/cb",
            "scopes": ["user.profile"],
        },
    )
    assert r.status_code == 303
    with session_scope() as s:
        c = s.query(OAuth2Client).filter_by(client_id=client_id).one()
        assert c.client_name == "Renamed" and c.scope == "user.profile"
    # Bad input: a clear 400 and nothing changed.
    for bad in (
        {"client_name": "x", "redirect_uris": "ftp://x", "scopes": ["user.profile"]},
        {"client_name": "x", "redirect_uris": "https://x/cb", "scopes": ["registry.info"]},
        {"client_name": "", "redirect_uris": "https://x/cb", "scopes": ["user.profile"]},
        {"client_name": "x", "redirect_uris": "https://x/cb"},
    ):
        browser.get("/account/profile?currentView=oauth2ClientsTab")
        assert browser.post("/account/oauth2/clients/save", bad).status_code == 400
    with session_scope() as s:
        assert s.query(OAuth2Client).count() == 1
    browser.get("/account/profile?currentView=oauth2ClientsTab")
    r = browser.post("/account/oauth2/clients/rotate", {"client_id": client_id})
    assert r.status_code == 200
    new_secret = re.search(r'data-testid="client-secret">([^<]+)<', browser.text()).group(1)
    assert new_secret != secret
    r = browser.post("/account/oauth2/clients/delete", {"client_id": client_id})
    assert r.status_code == 303
    with session_scope() as s:
        assert s.query(OAuth2Client).count() == 0


def test_a_client_credentials_client_is_edited_without_redirect_uris(browser, user):
    """`admin oauth create-client-credentials` makes one; its owner edits it in the tab:
    no redirect URIs asked, the client_credentials scopes offered."""
    from chalicelib.db import session_scope
    from chalicelib.models import OAuth2Client
    from chalicelib.services import oauth_apps, users

    with session_scope() as s:
        alice = users.get_user(s, "alice")
        client_id = oauth_apps.create_client_credentials_app(
            s, alice, name="CI script", scopes=["workflow.read"]
        ).client.client_id
    browser.login()
    page = browser.get(
        f"/account/profile?currentView=oauth2ClientsTab&edit={client_id}"
    ).body.decode()
    assert 'name="redirect_uris"' not in page and "no redirect URIs" in page
    r = browser.post(
        "/account/oauth2/clients/save",
        {
            "client_id": client_id,
            "client_name": "CI job",
            "scopes": ["workflow.read", "user.profile"],
        },
    )
    assert r.status_code == 303, browser.text()
    with session_scope() as s:
        c = s.query(OAuth2Client).filter_by(client_id=client_id).one()
        assert c.client_name == "CI job" and c.redirect_uris == []
        assert set(c.scope.split()) == {"workflow.read", "user.profile"}
        assert c.grant_types == ["client_credentials"]


def test_someone_elses_oauth_app_is_not_found(browser, user):
    from chalicelib.db import session_scope
    from chalicelib.services import oauth_apps, users

    with session_scope() as s:
        bob = users.create_user(s, "bob", password="bob password")
        theirs = oauth_apps.create_app(
            s, bob, name="Bob's", redirect_uris="https://b.example/cb", scopes=["user.profile"]
        ).client.client_id
    browser.login()
    browser.get(f"/account/profile?currentView=oauth2ClientsTab&edit={theirs}")
    assert browser.last.status_code == 404
    browser.get("/account/profile?currentView=oauth2ClientsTab")
    assert browser.post("/account/oauth2/clients/delete", {"client_id": theirs}).status_code == 404


def test_delete_account(browser, user, api_key, client):
    import json

    from chalicelib.db import session_scope
    from chalicelib.models import User, Workflow
    from tests.support import api_data

    browser.login()
    page = browser.get("/account/profile").body.decode()
    assert "only you own" not in page
    r = client.http.post(
        "/users/current/workflows",
        headers={"ApiKey": api_key, "Content-Type": "application/json"},
        body=json.dumps({"rocrate": api_data.b64(api_data.crate("mine")), "version": "1"}),
    )
    assert r.status_code == 201, r.body
    page = browser.get("/account/profile").body.decode()
    assert "the 1 workflow that only you own" in " ".join(page.split())
    assert browser.post("/account/delete_account", {"confirm_username": "nope"}).status_code == 400
    r = browser.post("/account/delete_account", {"confirm_username": "alice"})
    assert r.status_code == 303 and header(r, "Location") == "/"
    with session_scope() as s:
        assert s.query(User).count() == 0
        assert s.query(Workflow).count() == 0
    assert browser.get("/account/profile").status_code == 303


def test_session_of_a_deleted_user_goes_to_login(browser, user):
    from sqlalchemy import delete

    from chalicelib.db import session_scope
    from chalicelib.models import User

    browser.login()
    with session_scope() as s:
        s.execute(delete(User))
    r = browser.get("/account/profile")
    assert r.status_code == 303 and header(r, "Location").startswith("/account/login")


def test_logout_get_asks_first(browser, user):
    browser.login()
    r = browser.get("/account/logout")
    assert r.status_code == 200 and 'action="/account/logout"' in browser.text()
    assert browser.get("/account/profile").status_code == 200  # still signed in


def test_login_page_shows_a_provider_that_is_down_as_unavailable(browser, db, monkeypatch):
    from chalicelib.auth import providers
    from chalicelib.db import session_scope
    from chalicelib.services import registries
    from tests.support.fileserver import unused_port

    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")  # a closed port on loopback: refused
    with session_scope() as s:
        registries.add_registry(
            s,
            name="Hub Down",
            type="seek",
            client_id="app",
            client_secret="app-secret",
            api_url=f"http://127.0.0.1:{unused_port()}",
            client_name="hubdown",
        )
    providers.reset_probes()
    try:
        r = browser.get("/account/login")
    finally:
        providers.reset_probes()
    assert r.status_code == 200
    page = browser.text()
    assert "Hub Down (unavailable)" in page
    assert 'href="/oauth2/login/hubdown' not in page
