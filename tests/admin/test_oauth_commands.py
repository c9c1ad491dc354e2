"""The `oauth` admin group: OAuth apps created, listed and revoked (a client_credentials
client's token used on the API through the Chalice test client), and users' login-provider
tokens invalidated and refreshed against the GitHub OAuth emulator, including a provider
that is down or refuses."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from sqlalchemy import select

from chalicelib.admin import run
from chalicelib.auth.hashing import token_hash
from chalicelib.config import get_settings
from emulators.github_oauth import GitHubOAuthEmulator
from tests.admin.test_commands import _assert_usage_error, _state

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CODE = ["oauth", "create-client-oauth-code"]
CREDS = ["oauth", "create-client-credentials"]
APP = [
    *CODE,
    "My App",
    "https://app.example",
    "https://app.example/cb",
    "user.profile workflow.read",
]


def _ok(*argv: str):
    result = run(list(argv))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    return result


def _json(*argv: str):
    result = _ok(*argv, "--json")
    data = json.loads(result.stdout)
    assert data == json.loads(json.dumps(result.data, default=str))
    return data


def _create_user(name: str) -> None:
    from chalicelib.db import session_scope
    from chalicelib.services import users

    with session_scope() as s:
        users.create_user(s, name)


@pytest.fixture
def admin(db):
    _create_user("admin")
    return "admin"


def _clients() -> list:
    from chalicelib.db import session_scope
    from chalicelib.models import OAuth2Client

    with session_scope() as s:
        return [
            (c.client_id, c.client_secret_hash, c.user.username if c.user else None)
            for c in s.scalars(select(OAuth2Client))
        ]


# --- help -----------------------------------------------------------------------------------

SUBCOMMANDS = [
    "create-client-oauth-code",
    "create-client-credentials",
    "list",
    "revoke",
    "rotate-secret",
    "invalidate-tokens",
    "refresh-tokens",
]


def test_group_is_listed_with_its_commands():
    assert "    oauth" in run(["--help"]).stdout
    out = run(["oauth", "--help"]).stdout
    for command in SUBCOMMANDS:
        assert f"    {command}" in out, command


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command):
    result = run(["oauth", command, "--help"])
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.startswith(f"usage: python -m chalicelib.admin oauth {command}")
    assert "--json" in result.stdout


# --- create-client-oauth-code ---------------------------------------------------------------


def test_create_auth_code_app_json(admin):
    info = _json(*APP)
    assert set(info) == {
        "client_id",
        "client_secret",
        "client_name",
        "client_uri",
        "owner",
        "registry",
        "auth_method",
        "public",
        "scopes",
        "grant_types",
        "redirect_uris",
        "authorize_url",
        "token_url",
    }
    assert len(info["client_id"]) == 24 and len(info["client_secret"]) == 48
    assert info["client_name"] == "My App" and info["client_uri"] == "https://app.example"
    assert info["owner"] == "admin" and info["registry"] is None
    assert info["auth_method"] == "client_secret_post" and info["public"] is False
    assert info["scopes"] == ["user.profile", "workflow.read"]
    assert info["grant_types"] == ["authorization_code", "refresh_token"]
    assert info["redirect_uris"] == ["https://app.example/cb"]
    assert info["authorize_url"] == "http://lm.test/oauth2/authorize"
    assert info["token_url"] == "http://lm.test/oauth2/token"
    # Kept only hashed: not in the database, the parameter store or any later output.
    [(client_id, stored, owner)] = _clients()
    assert (client_id, owner) == (info["client_id"], "admin")
    assert stored == token_hash(info["client_secret"])
    assert info["client_secret"] not in json.dumps(_state(), default=str)
    listed = _ok("oauth", "list", "--json").stdout + _ok("oauth", "list").stdout
    assert info["client_id"] in listed and info["client_secret"] not in listed


def test_create_auth_code_app_text(admin, monkeypatch):
    monkeypatch.setenv("EXTERNAL_SERVER_URL", "https://lm.example.org")
    argv = [*CODE, "App", "https://app.example", "https://a.example/cb,https://b.example/cb"]
    out = _ok(*argv, "workflow.read,user.workflow.read", "client_secret_basic").stdout
    lines = {
        k.strip(): v.strip()
        for k, _, v in (line.partition(":") for line in out.splitlines())
        if k.strip()
    }
    [(client_id, stored, _owner)] = _clients()
    assert lines["CLIENT ID"] == client_id
    assert token_hash(lines["CLIENT SECRET"]) == stored
    assert out.count(lines["CLIENT SECRET"]) == 1
    assert lines["OWNER"] == "admin"
    assert lines["CLIENT AUTH METHOD"] == "client_secret_basic"
    assert lines["ALLOWED SCOPES"] == "user.workflow.read workflow.read"
    assert lines["REDIRECT URIS"] == "https://a.example/cb,https://b.example/cb"
    assert lines["AUTHORIZE URL"] == "https://lm.example.org/oauth2/authorize"
    assert lines["ACCESS TOKEN URL"] == "https://lm.example.org/oauth2/token"


def test_create_public_auth_code_app(admin):
    _create_user("bob")
    info = _json(*APP, "none", "--username", "bob")
    assert info["public"] is True and info["client_secret"] is None
    assert info["auth_method"] == "none" and info["owner"] == "bob"
    assert _clients() == [(info["client_id"], None, "bob")]
    text = _ok(*APP, "none", "--username", "bob").stdout
    assert "CLIENT SECRET:        (none: a public client, PKCE required)" in text


def test_without_an_admin_user_username_is_asked_for(db):
    _create_user("bob")
    for argv in (APP, [*CREDS, "s", "https://s.example", "user.profile"]):
        result = run(argv)
        assert result.exit_code == 1
        assert (
            result.stderr == "error: there is no 'admin' user to own the client: give --username\n"
        )
    assert _clients() == []
    assert _json(*APP, "--username", "bob")["owner"] == "bob"


# --- refusals: non-zero, one line, nothing changed ------------------------------------------

BAD = {
    "unknown user": ([*APP, "--username", "nobody"], 1, "no user named 'nobody'"),
    "unknown scope": ([*CODE, "a", "https://a.ex", "https://a.ex/cb", "bogus"], 1, "bogus"),
    "registry scope for an app": (
        [*CODE, "a", "https://a.ex", "https://a.ex/cb", "registry.info"],
        1,
        "not available to OAuth apps: registry.info",
    ),
    "no scope": ([*CODE, "a", "https://a.ex", "https://a.ex/cb", " "], 1, "at least one scope"),
    "bad auth method": ([*APP, "client_secret_jwt"], 2, "invalid choice"),
    "bad redirect uri": (
        [*CODE, "a", "https://a.ex", "a.ex/cb", "user.profile"],
        1,
        "redirect URI must be an absolute http(s) URL",
    ),
    "redirect uri with fragment": (
        [*CODE, "a", "https://a.ex", "https://a.ex/cb#x", "user.profile"],
        1,
        "redirect URI",
    ),
    "bad client uri": (
        [*CODE, "a", "ftp://a.ex", "https://a.ex/cb", "user.profile"],
        1,
        "home page must be an http(s) URL",
    ),
    "empty name": ([*CODE, " ", "https://a.ex", "https://a.ex/cb", "user.profile"], 1, "name"),
    "cc registry scope": (
        [*CREDS, "s", "https://s.ex", "user.profile registry.workflow.read"],
        1,
        "not available to client_credentials clients: registry.workflow.read",
    ),
    "cc registry-only info scope": (
        [*CREDS, "s", "https://s.ex", "registry.info"],
        1,
        "registry.info",
    ),
    "cc unknown scope": ([*CREDS, "s", "https://s.ex", "nope"], 1, "nope"),
    "cc public": ([*CREDS, "s", "https://s.ex", "user.profile", "none"], 2, "invalid choice"),
    "cc unknown user": (
        [*CREDS, "s", "https://s.ex", "user.profile", "--username", "x"],
        1,
        "no user named 'x'",
    ),
    "cc bad uri": ([*CREDS, "s", "s.ex", "user.profile"], 1, "http(s) URL"),
    "revoke unknown": (["oauth", "revoke", "nope"], 1, "no OAuth client with id 'nope'"),
    "invalidate unknown user": (["oauth", "invalidate-tokens", "x"], 1, "no user named 'x'"),
    "refresh unknown user": (["oauth", "refresh-tokens", "-u", "x"], 1, "no user named 'x'"),
    "refresh nobody": (["oauth", "refresh-tokens"], 1, "say whose tokens"),
    "refresh all unconfirmed": (["oauth", "refresh-tokens", "-a"], 1, "add -y/--silent"),
    "refresh user and all": (["oauth", "refresh-tokens", "-a", "-u", "admin"], 2, "not allowed"),
    "refresh unknown identity": (["oauth", "refresh-tokens", "-i", "999"], 1, "no identity 999"),
    "refresh bad identity": (["oauth", "refresh-tokens", "-i", "one"], 2, "invalid int"),
}


@pytest.fixture
def populated(admin):
    _ok(*APP)
    return _state()


@pytest.mark.parametrize("case", list(BAD))
def test_refusals(populated, case):
    argv, code, message = BAD[case]
    result = run(argv)
    assert result.exit_code == code, result
    assert result.stdout == ""
    if code == 2:
        _assert_usage_error(result.stderr)
    else:
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert _state() == populated


@pytest.mark.parametrize("case", ["unknown user", "cc registry scope", "revoke unknown"])
def test_refusals_json(populated, case):
    argv, code, _message = BAD[case]
    result = run([*argv, "--json"])
    assert result.exit_code == code
    assert json.loads(result.stdout) == {"error": result.stderr.strip()}
    assert _state() == populated


# --- create-client-credentials: a real token, a real API call -------------------------------


def _token(client, body: dict, headers: dict | None = None):
    return client.http.post(
        "/oauth2/token", headers={**FORM, **(headers or {})}, body=urlencode(body).encode()
    )


def test_client_credentials_client_acts_as_its_owner(client, admin):
    _create_user("bob")
    info = _json(
        *CREDS,
        "Bob's script",
        "https://bob.example",
        "user.profile,workflow.read",
        "--username",
        "bob",
    )
    assert info["grant_types"] == ["client_credentials"]
    assert info["authorize_url"] is None and info["redirect_uris"] == []
    assert info["owner"] == "bob" and info["scopes"] == ["user.profile", "workflow.read"]
    assert _clients() == [(info["client_id"], token_hash(info["client_secret"]), "bob")]

    r = _token(
        client,
        {
            "grant_type": "client_credentials",
            "client_id": info["client_id"],
            "client_secret": info["client_secret"],
        },
    )
    assert r.status_code == 200, r.body
    token = r.json_body
    assert token["token_type"] == "Bearer" and "refresh_token" not in token
    assert set(token["scope"].split()) == {"user.profile", "workflow.read"}
    me = client.http.get(
        "/users/current", headers={"Authorization": f"Bearer {token['access_token']}"}
    )
    assert me.status_code == 200, me.body
    assert me.json_body["username"] == "bob"

    # The token row records the user it acts as; a wrong secret gets nothing.
    from chalicelib.db import session_scope
    from chalicelib.models import OAuth2Token, User

    with session_scope() as s:
        [row] = s.scalars(select(OAuth2Token)).all()
        assert row.user_id == s.scalars(select(User.id).where(User.username == "bob")).one()
        assert row.access_token_hash == token_hash(token["access_token"])
    wrong = _token(
        client,
        {
            "grant_type": "client_credentials",
            "client_id": info["client_id"],
            "client_secret": "nope",
        },
    )
    assert wrong.status_code == 401

    # Revoking the app ends its tokens.
    out = _json("oauth", "revoke", info["client_id"])
    assert out == {
        "deleted": True,
        "client_id": info["client_id"],
        "client_name": "Bob's script",
        "owner": "bob",
    }
    me = client.http.get(
        "/users/current", headers={"Authorization": f"Bearer {token['access_token']}"}
    )
    assert me.status_code == 401
    assert _clients() == []


def test_rotate_secret_gives_a_new_one_once_and_ends_the_old_and_its_tokens(client, admin):
    info = _json(*CREDS, "s", "https://s.example", "user.profile")
    creds = {"grant_type": "client_credentials", "client_id": info["client_id"]}
    old = _token(client, {**creds, "client_secret": info["client_secret"]}).json_body
    rotated = _json("oauth", "rotate-secret", info["client_id"])
    secret = rotated["client_secret"]
    assert secret and secret != info["client_secret"]
    assert _clients() == [(info["client_id"], token_hash(secret), "admin")]
    bearer = {"Authorization": f"Bearer {old['access_token']}"}
    assert client.http.get("/users/current", headers=bearer).status_code == 401
    assert _token(client, {**creds, "client_secret": info["client_secret"]}).status_code == 401
    assert _token(client, {**creds, "client_secret": secret}).status_code == 200
    assert secret not in _ok("oauth", "list").stdout
    public = _json(*APP, "none")
    result = run(["oauth", "rotate-secret", public["client_id"]])
    assert result.exit_code == 1 and "public" in result.stderr


def test_client_credentials_basic_auth_and_scope_limits(client, admin):
    info = _json(*CREDS, "s", "https://s.example", "workflow.read", "client_secret_basic")
    assert info["owner"] == "admin" and info["auth_method"] == "client_secret_basic"
    raw = base64.b64encode(f"{info['client_id']}:{info['client_secret']}".encode()).decode()
    r = _token(
        client,
        {"grant_type": "client_credentials", "scope": "workflow.read user.profile"},
        {"Authorization": f"Basic {raw}"},
    )
    assert r.status_code == 200, r.body
    assert r.json_body["scope"] == "workflow.read"  # user.profile is not the client's
    me = client.http.get(
        "/users/current", headers={"Authorization": f"Bearer {r.json_body['access_token']}"}
    )
    assert me.status_code == 403  # the token lacks user.profile
    # No authorization-code flow for it: it has neither the grant nor a redirect URI.
    r = _token(
        client,
        {
            "grant_type": "authorization_code",
            "code": "x",
            "client_id": info["client_id"],
            "client_secret": info["client_secret"],
        },
    )
    assert r.status_code == 400 and r.json_body["error"] == "unauthorized_client"


# --- list and revoke ------------------------------------------------------------------------


def test_list_shows_apps_and_registry_clients_never_secrets(admin):
    assert _ok("oauth", "list").stdout == "(none)\n"
    assert _json("oauth", "list") == []
    app = _json(*APP)
    cc = _json(*CREDS, "script", "https://s.example", "user.profile")
    reg = _json("registry", "add", "WFH", "seek", "ID", "SECRET", "https://wfh.example")
    items = _json("oauth", "list")
    assert [(i["client_name"], i["owner"], i["registry"]) for i in items] == [
        ("My App", "admin", None),
        ("script", "admin", None),
        ("wfh", None, "WFH"),
    ]
    assert all("client_secret" not in i for i in items)
    assert items[2]["grant_types"] == ["client_credentials", "authorization_code", "refresh_token"]
    text = _ok("oauth", "list").stdout
    for secret in (app["client_secret"], cc["client_secret"], reg["client_secret"], "SECRET"):
        assert secret not in text
    rows = text.splitlines()
    assert rows[0].split() == [
        "CLIENT",
        "ID",
        "NAME",
        "OWNER",
        "GRANTS",
        "AUTH",
        "METHOD",
        "SCOPES",
    ]
    assert rows[3].split()[:3] == [reg["client_id"], "wfh", "(registry"]
    # A registry's client is not an app: it goes with `registry delete`.
    result = run(["oauth", "revoke", reg["client_id"]])
    assert result.exit_code == 1 and "registry delete" in result.stderr
    assert "deleted" in _ok("oauth", "revoke", app["client_id"]).stdout
    assert [i["client_name"] for i in _json("oauth", "list")] == ["script", "wfh"]


# --- login-provider tokens (GitHub emulator) ------------------------------------------------


@pytest.fixture
def github(db, monkeypatch):
    from chalicelib.auth import providers
    from chalicelib.secrets import get_secrets

    providers.reset_probes()
    with GitHubOAuthEmulator() as emulator:
        app = emulator.register_oauth_app(["http://lm.test/oauth2/authorized/github"])
        monkeypatch.setenv("LM_GITHUB_CLIENT_ID", app.client_id)
        monkeypatch.setenv("LM_GITHUB_URL", emulator.url)
        monkeypatch.setenv("LM_GITHUB_API_URL", emulator.url)
        monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
        get_secrets().put("oauth2/providers/github/client_secret", app.client_secret)
        yield emulator
    providers.reset_probes()


def _sign_in(emulator, username: str, person: str) -> int:
    """`username` links their GitHub account (the emulated `person`) the real way: login
    URL, the provider's redirect with a code, the token exchange. The identity's id."""
    from chalicelib.auth import providers
    from chalicelib.db import session_scope
    from chalicelib.models import Identity
    from chalicelib.services import identities, users

    with session_scope() as s:
        provider = providers.check_available(providers.get_provider(s, "github"))
    url, state = providers.begin_login(provider)
    emulator.auto_login = person
    r = requests.get(url, allow_redirects=False, timeout=10)
    query = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["Location"]).query).items()}
    found = providers.complete_login(provider, state, query)
    with session_scope() as s:
        user = users.get_user(s, username)
        identities.sign_in(s, found, user.id)
        return s.query(Identity).filter_by(provider_user_id=person).one().id


def _tokens(identity_id: int) -> dict:
    from chalicelib.auth import providers
    from chalicelib.db import session_scope
    from chalicelib.models import Identity

    with session_scope() as s:
        return providers.open_tokens(s.get(Identity, identity_id).tokens)


def _github_user(emulator, access_token: str) -> int:
    r = requests.get(
        f"{emulator.url}/user", headers={"Authorization": f"Bearer {access_token}"}, timeout=10
    )
    return r.status_code


@pytest.fixture
def people(github):
    _create_user("alice")
    _create_user("bob")
    return {
        "alice": _sign_in(github, "alice", "583231"),
        "bob": _sign_in(github, "bob", "1024025"),
    }


def test_invalidate_tokens_then_next_use_refreshes(github, people):
    from chalicelib.auth import providers
    from chalicelib.db import session_scope
    from chalicelib.models import Identity

    before = _tokens(people["alice"])["default"]
    assert before["expires_at"] > time.time() + 600
    out = _json("oauth", "invalidate-tokens", "alice")
    assert out == {"username": "alice", "identities": 1, "tokens": 1}
    after = _tokens(people["alice"])["default"]
    assert after["expires_at"] <= time.time()
    assert after["access_token"] == before["access_token"]  # kept, only marked expired
    assert _tokens(people["bob"])["default"]["expires_at"] > time.time() + 600  # not bob's
    # The next use refreshes at the provider (and stores the new token).
    with session_scope() as s:
        fresh = providers.fresh_token(s, s.get(Identity, people["alice"]))
    assert fresh and fresh != before["access_token"]
    assert _github_user(github, fresh) == 200
    assert _tokens(people["alice"])["default"]["access_token"] == fresh
    # Text output; a user without identities is affected nowhere.
    text = _ok("oauth", "invalidate-tokens", "bob").stdout
    assert text == "1 identities of bob affected: 1 provider tokens marked expired\n"
    _create_user("carol")
    assert _json("oauth", "invalidate-tokens", "carol")["identities"] == 0


def test_refresh_tokens_of_a_user(github, people):
    old = _tokens(people["alice"])["default"]
    bob_old = _tokens(people["bob"])["default"]
    out = _json("oauth", "refresh-tokens", "-u", "alice")
    assert out["refreshed"] == 1 and out["failed"] == 0 and out["skipped"] == 0
    [item] = out["identities"]
    assert item == {
        "identity": people["alice"],
        "username": "alice",
        "provider": "github",
        "outcome": "refreshed",
        "reason": None,
        "expires_at": _tokens(people["alice"])["default"]["expires_at"],
    }
    new = _tokens(people["alice"])["default"]
    assert new["access_token"] != old["access_token"]
    assert new["refresh_token"] != old["refresh_token"]
    assert _github_user(github, new["access_token"]) == 200
    assert _tokens(people["bob"])["default"] == bob_old  # only alice's
    # One identity, by id (with its user named or not); text output.
    text = _ok("oauth", "refresh-tokens", "-i", str(people["bob"])).stdout
    assert text == (
        f"identity {people['bob']} (github, user bob): refreshed\n"
        "1 refreshed, 0 skipped, 0 failed\n"
    )
    assert _tokens(people["bob"])["default"]["access_token"] != bob_old["access_token"]
    result = run(["oauth", "refresh-tokens", "-u", "alice", "-i", str(people["bob"])])
    assert result.exit_code == 1
    assert result.stderr == f"error: no identity {people['bob']} of user 'alice'\n"


def test_refresh_all_needs_confirmation(github, people):
    before = {name: _tokens(i)["default"]["access_token"] for name, i in people.items()}
    assert run(["oauth", "refresh-tokens", "--all"]).exit_code == 1
    assert {name: _tokens(i)["default"]["access_token"] for name, i in people.items()} == before
    out = _json("oauth", "refresh-tokens", "--all", "--silent")
    assert [(i["username"], i["outcome"]) for i in out["identities"]] == [
        ("alice", "refreshed"),
        ("bob", "refreshed"),
    ]
    for name, identity in people.items():
        assert _tokens(identity)["default"]["access_token"] != before[name]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (
            {"status": 503, "body": "down for maintenance"},
            "GitHub failed to refresh the token (HTTP 503)",
        ),
        ({"drop": True}, "GitHub did not answer"),
    ],
    ids=["503", "dropped"],
)
def test_refresh_with_the_provider_down(github, people, fault, reason):
    before = _tokens(people["alice"])
    github.fault(r"^/login/oauth/access_token$", **fault)
    result = run(["oauth", "refresh-tokens", "-a", "-y"])
    assert result.exit_code == 1
    assert result.stderr == "error: 2 of 2 identities could not be refreshed\n"
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"identity {people['alice']} (github, user alice): failed: {reason}")
    assert lines[-1] == "0 refreshed, 0 skipped, 2 failed"
    assert "Traceback" not in result.stdout + result.stderr
    assert _tokens(people["alice"]) == before  # unchanged: still usable
    assert _github_user(github, before["default"]["access_token"]) == 200
    # --json: the same report, with the failure.
    data = json.loads(run(["oauth", "refresh-tokens", "-u", "alice", "--json"]).stdout)
    assert data["failed"] == 1 and data["identities"][0]["reason"].startswith(reason)
    # Back up: it works again.
    github.clear_faults()
    assert _json("oauth", "refresh-tokens", "-u", "alice")["refreshed"] == 1


def test_refresh_refused_by_the_provider_and_partial_failure(github, people):
    # GitHub forgets alice's refresh token (revoked there): refused, bob still refreshed.
    alice_refresh = _tokens(people["alice"])["default"]["refresh_token"]
    github._oauth().refresh.pop(alice_refresh)
    result = run(["oauth", "refresh-tokens", "-a", "-y", "--json"])
    assert result.exit_code == 1
    assert result.stderr == "error: 1 of 2 identities could not be refreshed\n"
    data = json.loads(result.stdout)
    assert [(i["username"], i["outcome"]) for i in data["identities"]] == [
        ("alice", "failed"),
        ("bob", "refreshed"),
    ]
    assert data["identities"][0]["reason"] == "GitHub refused to refresh the token (invalid_grant)"
    assert (data["refreshed"], data["skipped"], data["failed"]) == (1, 0, 1)


def test_refresh_skips_identities_without_a_refresh_token(github, people):
    from chalicelib.auth import providers
    from chalicelib.db import session_scope
    from chalicelib.models import Identity

    with session_scope() as s:
        identity = s.get(Identity, people["bob"])
        tokens = providers.open_tokens(identity.tokens)
        del tokens["default"]["refresh_token"]
        identity.tokens = providers.seal_tokens(tokens)
    out = _json("oauth", "refresh-tokens", "-a", "-y")
    assert [(i["username"], i["outcome"]) for i in out["identities"]] == [
        ("alice", "refreshed"),
        ("bob", "skipped"),
    ]
    assert "sign in again" in out["identities"][1]["reason"]
    assert out["failed"] == 0


def test_refresh_with_the_provider_no_longer_configured(github, people, monkeypatch):
    monkeypatch.delenv("LM_GITHUB_CLIENT_ID")
    result = run(["oauth", "refresh-tokens", "-u", "bob"])
    assert result.exit_code == 1
    assert "failed: there is no login provider named 'github'" in result.stdout


# --- through the admin Lambda ---------------------------------------------------------------


def test_through_the_admin_lambda(client, admin):
    created = client.lambda_.invoke("admin", {"args": [*APP, "--json"]}).payload
    assert created["exit_code"] == 0, created
    assert created["result"]["owner"] == "admin" and created["result"]["client_secret"]
    listed = client.lambda_.invoke("admin", {"args": ["oauth", "list", "--json"]}).payload
    assert [i["client_id"] for i in listed["result"]] == [created["result"]["client_id"]]
    refused = client.lambda_.invoke("admin", {"args": ["oauth", "invalidate-tokens", "x"]}).payload
    assert refused == {"exit_code": 1, "stdout": "", "stderr": "error: no user named 'x'\n"}
    assert get_settings().external_server_url  # the URLs printed come from it
