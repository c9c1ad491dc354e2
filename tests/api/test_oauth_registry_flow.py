"""Acceptance: WorkflowHub's user flow over real HTTP, tried as its server would (issue 8).

With the client printed by `registry add`, `GET /oauth2/authorize/<registry>` sends the
browser to the emulated WorkflowHub's `/oauth/authorize`, comes back, ends at the client's
redirect URI with a code; the code exchanges for tokens; `/users/current` names the
WorkflowHub person; the refresh token rotates; `/oauth2/revoke` ends it. Then every table
and every captured log line is scanned for any credential in clear.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from emulators.seek import DEFAULT_PASSWORD, WorkflowHubEmulator
from tests.support.live import Browser, LiveServer
from tests.support.scan import assert_nowhere_in_clear

# Where WorkflowHub receives LifeMonitor's codes (a path of the WorkflowHub; nothing needs
# to serve it: the browser stops there and hands the code to "WorkflowHub's server").
WFH_CALLBACK_PATH = "/identities/auth/lifemonitor/callback"


@pytest.fixture
def wfh():
    with WorkflowHubEmulator() as emulator:
        yield emulator


@pytest.fixture
def live(chalice_app, db, monkeypatch):
    from chalicelib import logs

    # Our log setup replaces the root handlers: done before the test, so that pytest's
    # capturing handler (added when the test body runs) stays and sees every line.
    logs.configure()
    with LiveServer(chalice_app) as server:
        monkeypatch.setenv("EXTERNAL_SERVER_URL", server.url)
        monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")  # the emulators are on loopback
        from chalicelib.auth import providers

        providers.reset_probes()
        yield server


def admin(*args: str) -> dict:
    from chalicelib.admin import run

    result = run([*args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def add_registry(wfh, live) -> tuple[dict, object]:
    """As an administrator would: WorkflowHub's OAuth app for us first (its callback is
    what `registry add` prints), then `registry add` with its credentials."""
    app = wfh.register_oauth_app([f"{live.url}/oauth2/authorized/wfh"])
    info = admin(
        "registry",
        "add",
        "WFH",
        "seek",
        app.client_id,
        app.client_secret,
        wfh.url,
        "--client-name",
        "wfh",
        "--redirect-uris",
        wfh.url + WFH_CALLBACK_PATH,
    )
    return info, app


def token_call(live, **fields) -> requests.Response:
    return requests.post(f"{live.url}/oauth2/token", data=fields, timeout=30)


def sign_in_at_workflowhub(browser: Browser, info: dict, wfh, *, state="wfh-state-1"):
    """WorkflowHub's server sends the person's browser to the authorize URL it was given."""
    query = urlencode(
        {
            "response_type": "code",
            "client_id": info["client_id"],
            "redirect_uri": info["redirect_uris"][0],
            "state": state,
        }
    )
    redirect_uri = info["redirect_uris"][0]
    page = browser.go(f"{info['authorize_url']}?{query}", stop_at=redirect_uri)
    # The emulated WorkflowHub's sign-in form (Doorkeeper's /oauth/authorize).
    assert urlsplit(page.url).path == "/oauth/authorize", browser.visited
    assert urlsplit(page.url).netloc == urlsplit(wfh.url).netloc
    return browser.submit(
        page,
        {"login": "user1", "password": DEFAULT_PASSWORD},
        button=("authorize", "1"),
        stop_at=redirect_uri,
    )


def test_registry_add_prints_urls_that_work(wfh, live):
    info, _app = add_registry(wfh, live)
    assert info["authorize_url"] == f"{live.url}/oauth2/authorize/wfh"
    assert info["token_url"] == f"{live.url}/oauth2/token"
    assert info["callback_url"] == f"{live.url}/oauth2/authorized/wfh"
    assert info["grant_types"] == ["client_credentials", "authorization_code", "refresh_token"]
    shown = admin("registry", "show", "wfh")
    assert {k: shown[k] for k in ("authorize_url", "token_url", "callback_url")} == {
        k: info[k] for k in ("authorize_url", "token_url", "callback_url")
    }
    # None of them answers 404: the authorize URL starts a sign-in, the callback refuses a
    # request without state as a page, the token endpoint speaks OAuth2.
    r = requests.get(info["authorize_url"], allow_redirects=False, timeout=30)
    assert r.status_code == 303 and "/oauth2/login/wfh" in r.headers["Location"]
    r = requests.get(info["callback_url"], allow_redirects=False, timeout=30)
    assert r.status_code == 400 and "text/html" in r.headers["Content-Type"]
    assert "sign-in link is invalid" in r.text
    r = token_call(live, grant_type="authorization_code", code="x")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_workflowhub_user_flow(wfh, live, caplog):
    caplog.set_level(logging.DEBUG)
    info, app = add_registry(wfh, live)
    browser = Browser()

    # 1. The browser goes through LifeMonitor to WorkflowHub and back; a new person picks
    #    a username, then lands at WorkflowHub's redirect URI with a code.
    r = sign_in_at_workflowhub(browser, info, wfh)
    assert urlsplit(r.url).path == "/account/register_identity", browser.visited
    assert 'value="user1"' in r.text  # the proposed username: the WorkflowHub login
    r = browser.submit(r, {"username": "first-user"}, stop_at=info["redirect_uris"][0])
    final = r.final_url
    assert final.startswith(info["redirect_uris"][0]), browser.visited
    query = parse_qs(urlsplit(final).query)
    assert query["state"] == ["wfh-state-1"]
    code = query["code"][0]
    visited = [urlsplit(u) for u in browser.visited]
    assert any(
        u.netloc == urlsplit(wfh.url).netloc and u.path == "/oauth/authorize" for u in visited
    )
    assert any(u.path == "/oauth2/authorized/wfh" for u in visited)
    # WorkflowHub's token endpoint was called by us with the PKCE verifier.
    [exchange] = wfh.requests_to(r"^/oauth/token$")
    assert "code_verifier" in parse_qs(exchange.body.decode())

    # 2. WorkflowHub's server exchanges the code.
    r = token_call(
        live,
        grant_type="authorization_code",
        code=code,
        redirect_uri=info["redirect_uris"][0],
        client_id=info["client_id"],
        client_secret=info["client_secret"],
    )
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert set(tokens) >= {"access_token", "refresh_token", "expires_in", "token_type", "scope"}
    assert {"user.profile", "user.workflow.read"} <= set(tokens["scope"].split())

    # 3. /users/current names the WorkflowHub person.
    me = requests.get(
        f"{live.url}/users/current",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=30,
    )
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["username"] == "first-user"
    identity = body["identities"]["wfh"]
    assert identity["sub"] == "2"  # user1's person id on the WorkflowHub
    assert identity["name"] == "First User"
    assert identity["username"] == "user1"
    # and the registry's own view of its users resolves through that identity
    client_token = token_call(
        live,
        grant_type="client_credentials",
        client_id=info["client_id"],
        client_secret=info["client_secret"],
    ).json()["access_token"]
    as_registry = {"Authorization": f"Bearer {client_token}"}
    r = requests.get(f"{live.url}/users/2/workflows", headers=as_registry, timeout=30)
    assert r.status_code == 200, r.text
    r = requests.get(f"{live.url}/users/3/workflows", headers=as_registry, timeout=30)
    assert r.status_code == 401, r.text  # user2 never signed in
    r = requests.get(f"{live.url}/registries/current/users", headers=as_registry, timeout=30)
    assert [u["username"] for u in r.json()["items"]] == ["first-user"]

    # 4. The refresh token rotates: the old one (and its access token) stop working.
    r = token_call(
        live,
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
        client_id=info["client_id"],
        client_secret=info["client_secret"],
    )
    assert r.status_code == 200, r.text
    rotated = r.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    again = token_call(
        live,
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
        client_id=info["client_id"],
        client_secret=info["client_secret"],
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    old = requests.get(
        f"{live.url}/users/current",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=30,
    )
    assert old.status_code == 401
    bearer = {"Authorization": f"Bearer {rotated['access_token']}"}
    assert requests.get(f"{live.url}/users/current", headers=bearer, timeout=30).ok

    # 5. Revocation ends it (RFC 7009: 200, then the token is dead).
    r = requests.post(
        f"{live.url}/oauth2/revoke",
        data={
            "token": rotated["refresh_token"],
            "token_type_hint": "refresh_token",
            "client_id": info["client_id"],
            "client_secret": info["client_secret"],
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert requests.get(f"{live.url}/users/current", headers=bearer, timeout=30).status_code == 401
    r = token_call(
        live,
        grant_type="refresh_token",
        refresh_token=rotated["refresh_token"],
        client_id=info["client_id"],
        client_secret=info["client_secret"],
    )
    assert r.status_code == 400

    # 6. A second visit: the person is known and signed in, WorkflowHub's client skips
    #    consent — straight to the redirect URI with a new code, no form anywhere.
    r = browser.go(
        info["authorize_url"]
        + "?"
        + urlencode(
            {
                "response_type": "code",
                "client_id": info["client_id"],
                "redirect_uri": info["redirect_uris"][0],
            }
        ),
        stop_at=info["redirect_uris"][0],
    )
    assert "code=" in r.final_url

    # 7. No credential in clear: not in any table, not in any log line.
    secrets = [
        info["client_secret"],
        app.client_secret,
        code,
        tokens["access_token"],
        tokens["refresh_token"],
        rotated["access_token"],
        rotated["refresh_token"],
        client_token,
        *wfh.tokens,  # WorkflowHub's tokens, which we keep for the person
        *[k for k in wfh._oauth().refresh],
        parse_qs(urlsplit(r.final_url).query)["code"][0],
    ]
    assert_nowhere_in_clear(secrets, caplog)
