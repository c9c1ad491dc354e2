"""The emulated login providers: WorkflowHub's Doorkeeper (`/oauth/*`, `/people/current`)
and GitHub (`/login/oauth/*`, `/user`, `/user/emails`) — forms, codes, PKCE, refresh."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from emulators.github_oauth import GitHubOAuthEmulator
from emulators.seek import DEFAULT_PASSWORD, WorkflowHubEmulator
from tests.support.live import forms

CALLBACK = "http://client.example/callback"


@pytest.fixture(scope="module")
def _wfh():
    with WorkflowHubEmulator() as emulator:
        yield emulator


@pytest.fixture
def wfh(_wfh):
    _wfh.reset()
    return _wfh


@pytest.fixture(scope="module")
def _github():
    with GitHubOAuthEmulator() as emulator:
        yield emulator


@pytest.fixture
def github(_github):
    _github.reset()
    return _github


def authorize(emulator, path, app, **extra):
    params = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": CALLBACK,
        "state": "s1",
        **extra,
    }
    return requests.get(f"{emulator.url}{path}", params=params, allow_redirects=False, timeout=10)


def sign_in(emulator, path, page, login, password, button=("authorize", "1")):
    [form] = forms(page.text)
    data = dict(form.fields)
    data.update(login=login, password=password)
    data[button[0]] = button[1]
    return requests.post(f"{emulator.url}{path}", data=data, allow_redirects=False, timeout=10)


def code_of(response) -> str:
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(CALLBACK + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["s1"]
    return query["code"][0]


def test_workflowhub_sign_in_form_code_token_people_current(wfh):
    app = wfh.register_oauth_app([CALLBACK])
    page = authorize(wfh, "/oauth/authorize", app, scope="read")
    assert page.status_code == 200 and 'name="password"' in page.text
    wrong = sign_in(wfh, "/oauth/authorize", page, "user1", "nope")
    assert wrong.status_code == 401 and "Invalid login or password" in wrong.text
    code = code_of(sign_in(wfh, "/oauth/authorize", page, "user1", DEFAULT_PASSWORD))
    token = requests.post(
        f"{wfh.url}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "client_id": app.client_id,
            "client_secret": app.client_secret,
        },
        timeout=10,
    )
    assert token.status_code == 200, token.text
    body = token.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "read"
    me = requests.get(
        f"{wfh.url}/people/current?format=json",
        headers={"Authorization": f"Bearer {body['access_token']}"},
        timeout=10,
    )
    assert me.status_code == 200 and me.json()["data"]["id"] == "2"
    assert me.json()["data"]["attributes"]["login"] == "user1"
    # The code is single use.
    again = requests.post(
        f"{wfh.url}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "client_id": app.client_id,
            "client_secret": app.client_secret,
        },
        timeout=10,
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_workflowhub_refusals(wfh):
    app = wfh.register_oauth_app([CALLBACK])
    assert authorize(wfh, "/oauth/authorize", app, redirect_uri="http://evil/").status_code == 400
    unknown = requests.get(
        f"{wfh.url}/oauth/authorize", params={"client_id": "x"}, allow_redirects=False, timeout=10
    )
    assert unknown.status_code == 401
    page = authorize(wfh, "/oauth/authorize", app)
    denied = sign_in(wfh, "/oauth/authorize", page, "", "", button=("deny", "1"))
    assert "error=access_denied" in denied.headers["Location"]
    bad_client = requests.post(
        f"{wfh.url}/oauth/token",
        data={"grant_type": "authorization_code", "code": "x", "client_id": app.client_id},
        timeout=10,
    )
    assert bad_client.status_code == 401


def test_pkce_and_refresh_rotation(wfh):
    app = wfh.register_oauth_app([CALLBACK])
    verifier = "v" * 50
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    wfh.auto_login = "2"
    code = code_of(
        authorize(
            wfh, "/oauth/authorize", app, code_challenge=challenge, code_challenge_method="S256"
        )
    )
    common = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "client_id": app.client_id,
        "client_secret": app.client_secret,
    }
    wrong = requests.post(
        f"{wfh.url}/oauth/token", data={**common, "code_verifier": "w" * 50}, timeout=10
    )
    assert wrong.status_code == 400
    code = code_of(
        authorize(
            wfh, "/oauth/authorize", app, code_challenge=challenge, code_challenge_method="S256"
        )
    )
    ok = requests.post(
        f"{wfh.url}/oauth/token",
        data={**common, "code": code, "code_verifier": verifier},
        timeout=10,
    )
    assert ok.status_code == 200
    first = ok.json()
    wfh.expire_access_tokens()
    bearer = {"Authorization": f"Bearer {first['access_token']}"}
    assert (
        requests.get(f"{wfh.url}/people/current.json", headers=bearer, timeout=10).status_code
        == 401
    )
    refreshed = requests.post(
        f"{wfh.url}/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": app.client_id,
            "client_secret": app.client_secret,
        },
        timeout=10,
    )
    assert refreshed.status_code == 200
    bearer = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    me = requests.get(f"{wfh.url}/people/current.json", headers=bearer, timeout=10)
    assert me.status_code == 200 and me.json()["data"]["id"] == "2"
    reused = requests.post(
        f"{wfh.url}/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": app.client_id,
            "client_secret": app.client_secret,
        },
        timeout=10,
    )
    assert reused.status_code == 400


def test_github_flow_form_encoded_or_json_and_emails(github):
    app = github.register_oauth_app([CALLBACK])
    page = authorize(github, "/login/oauth/authorize", app, scope="read:user user:email")
    code = code_of(sign_in(github, "/login/oauth/authorize", page, "octocat", "github-emulator"))
    fields = {
        "code": code,
        "redirect_uri": CALLBACK,
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "grant_type": "authorization_code",
    }
    plain = requests.post(f"{github.url}/login/oauth/access_token", data=fields, timeout=10)
    assert plain.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    token = parse_qs(plain.text)["access_token"][0]
    bearer = {"Authorization": f"Bearer {token}"}
    user = requests.get(f"{github.url}/user", headers=bearer, timeout=10).json()
    assert (user["login"], user["id"], user["email"]) == ("octocat", 583231, None)
    emails = requests.get(f"{github.url}/user/emails", headers=bearer, timeout=10).json()
    assert [e["email"] for e in emails if e["primary"]] == ["octocat@github.example"]
    assert requests.get(f"{github.url}/user", timeout=10).status_code == 401

    github.auto_login = "1024025"
    code = code_of(authorize(github, "/login/oauth/authorize", app, scope="read:user"))
    as_json = requests.post(
        f"{github.url}/login/oauth/access_token",
        data={**fields, "code": code},
        headers={"Accept": "application/json"},
        timeout=10,
    )
    token = as_json.json()["access_token"]
    bearer = {"Authorization": f"token {token}"}
    assert requests.get(f"{github.url}/user", headers=bearer, timeout=10).json()["login"] == (
        "hubber"
    )
    # Without the user:email scope the address list is not shown.
    assert requests.get(f"{github.url}/user/emails", headers=bearer, timeout=10).status_code == 404
