"""Login providers against the emulated WorkflowHub and GitHub: listing and availability,
the authorization URL (state, PKCE), the callback's checks, identities, failures as
ProviderError (never a crash), and provider tokens sealed at rest and refreshed."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from emulators.github_oauth import GitHubOAuthEmulator
from emulators.seek import WorkflowHubEmulator


@pytest.fixture
def github(monkeypatch):
    from chalicelib.secrets import get_secrets

    with GitHubOAuthEmulator() as emulator:
        app = emulator.register_oauth_app(["http://lm.test/oauth2/authorized/github"])
        monkeypatch.setenv("LM_GITHUB_CLIENT_ID", app.client_id)
        monkeypatch.setenv("LM_GITHUB_URL", emulator.url)
        monkeypatch.setenv("LM_GITHUB_API_URL", emulator.url)
        monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
        get_secrets().put("oauth2/providers/github/client_secret", app.client_secret)
        yield emulator


@pytest.fixture
def wfh(db, monkeypatch):
    from chalicelib.db import session_scope
    from chalicelib.services import registries

    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    with WorkflowHubEmulator() as emulator:
        app = emulator.register_oauth_app(["http://lm.test/oauth2/authorized/wfh"])
        with session_scope() as s:
            registries.add_registry(
                s,
                name="WFH",
                type="seek",
                client_id=app.client_id,
                client_secret=app.client_secret,
                api_url=emulator.url,
                client_name="wfh",
            )
        yield emulator


@pytest.fixture(autouse=True)
def _fresh_probes():
    from chalicelib.auth import providers

    providers.reset_probes()
    yield
    providers.reset_probes()


def provider(name):
    from chalicelib.auth import providers
    from chalicelib.db import session_scope

    with session_scope() as s:
        return providers.check_available(providers.get_provider(s, name))


def follow_to_callback(url: str, emulator, person: str) -> dict[str, str]:
    """The person, already signed in at the provider, is sent back with a code."""
    emulator.auto_login = person
    r = requests.get(url, allow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text
    location = r.headers["Location"]
    assert location.startswith("http://lm.test/oauth2/authorized/")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def test_list_providers(db, wfh, github):
    from chalicelib.auth import providers
    from chalicelib.db import session_scope

    with session_scope() as s:
        listed = providers.list_providers(s)
    assert [(p.name, p.label, p.kind, p.available) for p in listed] == [
        ("wfh", "WFH", "seek", True),
        ("github", "GitHub", "github", True),
    ]
    assert listed[0].login_url == "/oauth2/login/wfh"
    assert listed[0].callback_url == "http://lm.test/oauth2/authorized/wfh"
    # A provider that is down is listed as unavailable (probed again after reset).
    github.fault(r"^/$", status=503)
    providers.reset_probes()
    with session_scope() as s:
        assert [p.available for p in providers.list_providers(s)] == [True, False]


def test_unconfigured_provider_is_unavailable(db, wfh, monkeypatch):
    from chalicelib.auth import providers
    from chalicelib.db import session_scope
    from chalicelib.secrets import get_secrets

    with session_scope() as s:
        assert [p.name for p in providers.list_providers(s)] == ["wfh"]  # no GitHub id
        reg = s.query(__import__("chalicelib.models", fromlist=["Registry"]).Registry).one()
        get_secrets().delete(reg.server_secret_key)
        assert [p.available for p in providers.list_providers(s)] == [False]
    with pytest.raises(providers.ProviderError, match="not available"):
        providers.begin_login(provider("wfh"))


def test_authorization_url_carries_state_and_pkce(db, wfh):
    from chalicelib.auth import providers

    url, state = providers.begin_login(provider("wfh"), "/dashboard")
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{wfh.url}/oauth/authorize"
    assert query["state"] == state.state and len(state.state) >= 32
    assert query["code_challenge_method"] == "S256"
    assert query["redirect_uri"] == "http://lm.test/oauth2/authorized/wfh"
    assert query["scope"] == "read"
    assert state.code_verifier not in url
    again = providers.LoginState.from_dict(json.loads(json.dumps(state.as_dict())))
    assert again == state and providers.LoginState.from_dict({"x": 1}) is None


def test_workflowhub_identity(db, wfh):
    from chalicelib.auth import providers

    p = provider("wfh")
    url, state = providers.begin_login(p)
    found = providers.complete_login(p, state, follow_to_callback(url, wfh, "2"))
    assert (found.provider, found.provider_user_id, found.username) == ("wfh", "2", "user1")
    assert found.name == "First User" and found.registry_id is not None
    assert found.token["access_token"] in wfh.tokens
    [exchange] = wfh.requests_to(r"^/oauth/token$")
    assert parse_qs(exchange.body.decode())["code_verifier"] == [state.code_verifier]


def test_github_identity_with_private_email(db, github):
    from chalicelib.auth import providers

    p = provider("github")
    url, state = providers.begin_login(p)
    assert "scope=read%3Auser+user%3Aemail" in url
    found = providers.complete_login(p, state, follow_to_callback(url, github, "583231"))
    assert (found.provider_user_id, found.username, found.email) == (
        "583231",
        "octocat",
        "octocat@github.example",  # the primary verified one, from /user/emails
    )
    assert github.requests_to(r"^/user/emails$")
    github.requests.clear()
    url, state = providers.begin_login(p)
    found = providers.complete_login(p, state, follow_to_callback(url, github, "1024025"))
    assert found.email == "hubber@github.example" and not github.requests_to(r"^/user/emails$")


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ({"error": "access_denied", "state": "{state}"}, 403, "access was denied"),
        ({"code": "c", "state": "forged"}, 400, "invalid or has expired"),
        ({"code": "c"}, 400, "invalid or has expired"),
        ({"state": "{state}"}, 502, "no authorization code"),
        ({"code": "not-issued", "state": "{state}"}, 502, "did not answer as expected"),
    ],
)
def test_callback_refusals(db, wfh, query, status, message):
    from chalicelib.auth import providers

    p = provider("wfh")
    _url, state = providers.begin_login(p)
    query = {k: v.replace("{state}", state.state) for k, v in query.items()}
    with pytest.raises(providers.ProviderError, match=message) as info:
        providers.complete_login(p, state, query)
    assert info.value.status == status


def test_expired_or_missing_login_state(db, wfh):
    from chalicelib.auth import providers

    p = provider("wfh")
    _url, state = providers.begin_login(p)
    state.created -= providers.LOGIN_STATE_TTL + 1
    with pytest.raises(providers.ProviderError, match="expired"):
        providers.complete_login(p, state, {"code": "c", "state": state.state})
    with pytest.raises(providers.ProviderError, match="expired"):
        providers.complete_login(p, None, {"code": "c", "state": state.state})


@pytest.mark.parametrize(
    ("path", "fault"),
    [
        (r"^/oauth/token$", {"status": 500, "body": "boom"}),
        (r"^/oauth/token$", {"drop": True}),
        (r"^/people/current$", {"status": 503}),
        (r"^/people/current$", {"status": 200, "body": "not json"}),
    ],
)
def test_provider_failures_are_provider_errors(db, wfh, path, fault):
    from chalicelib.auth import providers

    p = provider("wfh")
    url, state = providers.begin_login(p)
    query = follow_to_callback(url, wfh, "2")
    wfh.fault(path, **fault)
    with pytest.raises(providers.ProviderError) as info:
        providers.complete_login(p, state, query)
    assert info.value.status == 502 and "WFH" in info.value.detail


def test_provider_tokens_are_sealed_and_refreshed(db, wfh):
    from chalicelib.auth import providers
    from chalicelib.db import session_scope
    from chalicelib.models import Identity
    from chalicelib.services import identities, users

    p = provider("wfh")
    url, state = providers.begin_login(p)
    found = providers.complete_login(p, state, follow_to_callback(url, wfh, "2"))
    with session_scope() as s:
        user = users.create_user(s, "first")
        identities.sign_in(s, found, user.id)
    with session_scope() as s:
        identity = s.query(Identity).one()
        stored = json.dumps(identity.tokens)
        assert found.token["access_token"] not in stored
        assert found.token["refresh_token"] not in stored
        assert providers.fresh_token(s, identity) == found.token["access_token"]
        # The provider's token expires: the next use refreshes it (rotation at WorkflowHub).
        wfh.expire_access_tokens()
        tokens = providers.open_tokens(identity.tokens)
        tokens["default"]["expires_at"] = 0
        identity.tokens = providers.seal_tokens(tokens)
        fresh = providers.fresh_token(s, identity)
        assert fresh and fresh != found.token["access_token"]
    r = requests.get(
        f"{wfh.url}/people/current?format=json",
        headers={"Authorization": f"Bearer {fresh}"},
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["data"]["id"] == "2"
    with session_scope() as s:
        identity = s.query(Identity).one()
        assert providers.fresh_token(s, identity) == fresh  # stored again, sealed
        assert fresh not in json.dumps(identity.tokens)


def test_unreadable_sealed_tokens_read_as_none(db):
    from chalicelib.auth import providers

    sealed = providers.seal_tokens({"default": {"access_token": "abc"}})
    assert providers.open_tokens(sealed) == {"default": {"access_token": "abc"}}
    assert providers.open_tokens({"v": "1", "sealed": "garbage"}) == {}
    assert providers.open_tokens({}) == {} and providers.open_tokens(None) == {}
