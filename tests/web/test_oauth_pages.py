"""The sign-in pages over real HTTP: GitHub login through its emulator's form, a provider
that is down or refuses (a page, never a 500), the register-identity form (validation, and
a burst of identical submissions on PostgreSQL), the merge offer, connecting an identity;
and LifeScience Login (LS AAI, OpenID Connect) through its emulator: the button, register
then sign in, the identity in the profile and `/users/current`, every ID token defect and a
forged `state` refused with a page and no session, discovery down, connect and disconnect."""

from __future__ import annotations

import html
import re
import threading
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests

from emulators.github_oauth import DEFAULT_PASSWORD, GitHubOAuthEmulator
from emulators.oidc import DEFAULT_PASSWORD as OIDC_PASSWORD
from emulators.oidc import DEFECTS as OIDC_DEFECTS
from emulators.oidc import OIDCEmulator
from tests.support.live import Browser, LiveServer, forms


@pytest.fixture
def live(chalice_app, db, monkeypatch):
    from chalicelib import logs
    from chalicelib.auth import providers

    # Our log setup replaces the root handlers: done before the test, so that pytest's
    # capturing handler (added when the test body runs) stays and sees every line.
    logs.configure()
    with LiveServer(chalice_app) as server:
        monkeypatch.setenv("EXTERNAL_SERVER_URL", server.url)
        monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
        providers.reset_probes()
        yield server
    providers.reset_probes()


@pytest.fixture
def github(live, monkeypatch):
    from chalicelib.secrets import get_secrets

    with GitHubOAuthEmulator() as emulator:
        app = emulator.register_oauth_app([f"{live.url}/oauth2/authorized/github"])
        monkeypatch.setenv("LM_GITHUB_CLIENT_ID", app.client_id)
        monkeypatch.setenv("LM_GITHUB_URL", emulator.url)
        monkeypatch.setenv("LM_GITHUB_API_URL", emulator.url)
        get_secrets().put("oauth2/providers/github/client_secret", app.client_secret)
        yield emulator


def github_sign_in(browser: Browser, live, login="octocat", next_url="/dashboard"):
    """Start at our login URL, fill GitHub's form; returns our next page."""
    page = browser.go(f"{live.url}/oauth2/login/github?" + urlencode({"next": next_url}))
    assert page.status_code == 200 and "Sign in to GitHub" in page.text, browser.visited
    return browser.submit(
        page,
        {"login": login, "password": DEFAULT_PASSWORD},
        button=("authorize", "1"),
        stop_at=f"{live.url}{next_url}",
    )


JANE_SUB = "5a1d3c0b9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b@lifescience-ri.eu"


def signed_in_cookie(user_id: int) -> str:
    from chalicelib.web.session import WebSession, login, session_cookie

    session = WebSession()
    login(session, user_id)
    return session_cookie(session).split(";")[0].split("=", 1)[1]


def test_github_sign_in_registers_then_signs_in(github, live, caplog):
    import logging

    from chalicelib.db import session_scope
    from chalicelib.models import Identity, User
    from tests.support.scan import assert_nowhere_in_clear

    caplog.set_level(logging.DEBUG)

    browser = Browser()
    page = github_sign_in(browser, live)
    assert urlsplit(page.url).path == "/account/register_identity"
    assert "GitHub" in page.text and 'value="octocat"' in page.text
    # A taken or malformed username: the form again, with the reason, nothing created.
    bad = browser.submit(page, {"username": "not valid!"})
    assert bad.status_code == 400 and "username must be" in bad.text
    done = browser.submit(bad, {"username": "octo"}, stop_at=f"{live.url}/dashboard")
    assert done.status_code == 303
    cookie = done.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    with session_scope() as s:
        user = s.query(User).one()
        assert (user.username, user.email) == ("octo", "octocat@github.example")
        assert s.query(Identity).one().provider_user_id == "583231"
    # Signed out, signing in again goes straight through.
    again = Browser()
    r = github_sign_in(again, live)
    assert r.status_code == 303 and r.final_url == f"{live.url}/dashboard"
    assert not any("/account/register_identity" in u for u in again.visited)
    # GitHub's tokens (kept for the person) and our app's secret: nowhere in clear.
    state = github._oauth()
    secrets = [*github.tokens, *state.refresh, *[a.client_secret for a in state.apps.values()]]
    assert len(secrets) >= 5
    assert_nowhere_in_clear(secrets, caplog)


def test_open_redirects_are_refused(github, live):
    browser = Browser()
    page = browser.go(
        f"{live.url}/oauth2/login/github?" + urlencode({"next": "https://evil.example/x"})
    )
    r = browser.submit(
        page,
        {"login": "hubber", "password": DEFAULT_PASSWORD},
        button=("authorize", "1"),
        stop_at="https://evil.example",
    )
    r = browser.submit(r, {"username": "hubber"}, stop_at="https://evil.example")
    assert not getattr(r, "final_url", "").startswith("https://evil.example"), browser.visited
    assert not any(u.startswith("https://evil.example") for u in browser.visited)


def test_provider_down_is_a_page_not_an_error(github, live):
    github.fault(r"^/$", status=503)
    r = requests.get(f"{live.url}/oauth2/login/github", allow_redirects=False, timeout=30)
    assert r.status_code == 503
    assert r.headers["Content-Type"].startswith("text/html")
    assert "GitHub is not available right now" in r.text


@pytest.mark.parametrize(
    ("fault", "status", "text"),
    [
        ({"status": 500}, 502, "GitHub did not answer as expected"),
        ({"drop": True}, 502, "GitHub did not answer as expected"),
    ],
)
def test_provider_failing_at_the_callback(github, live, fault, status, text):
    browser = Browser()
    page = browser.go(f"{live.url}/oauth2/login/github")
    github.fault(r"^/login/oauth/access_token$", **fault)
    r = browser.submit(
        page, {"login": "octocat", "password": DEFAULT_PASSWORD}, button=("authorize", "1")
    )
    assert r.status_code == status, r.text
    assert text in r.text and "text/html" in r.headers["Content-Type"]


def test_denied_at_the_provider(github, live):
    browser = Browser()
    page = browser.go(f"{live.url}/oauth2/login/github")
    r = browser.submit(page, button=("deny", "1"))
    assert r.status_code == 403 and "access was denied" in r.text


def test_callback_replayed_in_another_browser_is_refused(github, live):
    browser = Browser()
    page = browser.go(f"{live.url}/oauth2/login/github")
    r = browser.submit(
        page,
        {"login": "octocat", "password": DEFAULT_PASSWORD},
        button=("authorize", "1"),
        stop_at=f"{live.url}/oauth2/authorized/github",
    )
    callback = r.final_url
    stranger = requests.get(callback, allow_redirects=False, timeout=30)  # no session
    assert stranger.status_code == 400 and "invalid or has expired" in stranger.text
    ok = browser.go(callback)
    assert urlsplit(ok.url).path == "/account/register_identity"
    # The state was used once: the same callback again is refused.
    assert browser.go(callback).status_code == 400


def test_unknown_provider_and_nothing_pending(live):
    assert requests.get(f"{live.url}/oauth2/login/nope", timeout=30).status_code == 404
    r = requests.get(f"{live.url}/account/register_identity", timeout=30)
    assert r.status_code == 400 and "no sign-in waiting" in r.text
    r = requests.get(f"{live.url}/account/identity_not_found", timeout=30)
    assert r.status_code == 400
    r = requests.get(f"{live.url}/account/merge", allow_redirects=False, timeout=30)
    assert r.status_code == 303 and "/account/login" in r.headers["Location"]


def test_burst_of_identical_registrations(postgres, github, live):
    """Double clicks and retries of one register form: one account, the rest 409."""
    from chalicelib.db import session_scope
    from chalicelib.models import Identity, User

    browser = Browser()
    page = github_sign_in(browser, live)
    [form] = [f for f in forms(page.text) if f.method == "POST"]
    fields = dict(form.fields)
    fields["username"] = "octo"
    cookies = browser.http.cookies.get_dict()
    barrier = threading.Barrier(6)
    statuses: list[int] = []

    def post():
        barrier.wait()
        r = requests.post(
            f"{live.url}/account/register_identity",
            data=fields,
            cookies=cookies,
            allow_redirects=False,
            timeout=60,
        )
        statuses.append(r.status_code)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(statuses) == [303] + [409] * 5, statuses
    with session_scope() as s:
        assert s.query(User).count() == 1 and s.query(Identity).count() == 1


def test_merge_offer(github, live, user):
    """octo owns the GitHub identity; alice, signed in, signs in with it: merge offered."""
    from chalicelib.db import session_scope
    from chalicelib.models import Identity, User

    first = Browser()
    page = github_sign_in(first, live)
    first.submit(page, {"username": "octo"}, stop_at=f"{live.url}/dashboard")

    alice = Browser()
    alice.http.cookies.set("lm_session", signed_in_cookie(user.id), domain="127.0.0.1", path="/")
    page = alice.go(f"{live.url}/oauth2/login/github")
    r = alice.submit(
        page, {"login": "octocat", "password": DEFAULT_PASSWORD}, button=("authorize", "1")
    )
    assert urlsplit(r.url).path == "/account/merge", alice.visited
    assert "octo" in r.text and "alice" in r.text
    # A cross-site post of the merge form is refused.
    evil = requests.post(
        f"{live.url}/account/merge",
        data={"confirm": "yes"},
        cookies=alice.http.cookies.get_dict(),
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
        timeout=30,
    )
    assert evil.status_code == 403
    with session_scope() as s:
        assert s.query(User).count() == 2
    done = alice.submit(r, button=("confirm", "yes"), stop_at=f"{live.url}/account/profile")
    assert done.status_code == 303
    with session_scope() as s:
        assert [u.username for u in s.query(User)] == ["alice"]
        assert s.query(Identity).one().user_id == user.id


def test_signed_in_person_connects_an_identity(github, live, user):
    from chalicelib.db import session_scope
    from chalicelib.models import Identity

    browser = Browser()
    browser.http.cookies.set("lm_session", signed_in_cookie(user.id), domain="127.0.0.1", path="/")
    page = browser.go(f"{live.url}/oauth2/login/github?" + urlencode({"next": "/account/profile"}))
    r = browser.submit(
        page,
        {"login": "hubber", "password": DEFAULT_PASSWORD},
        button=("authorize", "1"),
        stop_at=f"{live.url}/account/profile",
    )
    assert r.final_url == f"{live.url}/account/profile"
    with session_scope() as s:
        assert s.query(Identity).one().user_id == user.id


# --- LifeScience Login (LS AAI), the OpenID Connect provider ----------------------------------


@pytest.fixture(scope="module")
def _oidc():
    # One per module (its RSA keys take a moment to make), reset for each test.
    with OIDCEmulator() as emulator:
        yield emulator


@pytest.fixture
def lsaai(live, _oidc, monkeypatch):
    from chalicelib.auth.providers import LSAAI_SECRET_KEY
    from chalicelib.secrets import get_secrets

    _oidc.reset()
    app = _oidc.register_oauth_app([f"{live.url}/oauth2/authorized/lsaai"])
    monkeypatch.setenv("LM_LSAAI_CLIENT_ID", app.client_id)
    monkeypatch.setenv("LM_LSAAI_ISSUER", _oidc.issuer)
    get_secrets().put(LSAAI_SECRET_KEY, app.client_secret)
    _oidc.app = app
    return _oidc


LSAAI_BUTTON = re.compile(r'<a class="button" href="([^"]*/oauth2/login/lsaai[^"]*)"')


def lsaai_sign_in(browser: Browser, live, login="jdoe", next_url="/dashboard", **kwargs):
    """From our login page, "Sign in with LifeScience Login", then LS AAI's form; returns
    our next page (`stop_at` the `next_url` unless told otherwise)."""
    page = browser.go(f"{live.url}/account/login?" + urlencode({"next": next_url}))
    assert page.status_code == 200 and "Sign in with LifeScience Login" in page.text
    [href] = LSAAI_BUTTON.findall(page.text)
    form = browser.go(urljoin(page.url, html.unescape(href)))
    assert form.status_code == 200 and "<title>LifeScience Login</title>" in form.text
    assert urlsplit(form.url).path == "/oidc/authorize", browser.visited
    kwargs.setdefault("stop_at", f"{live.url}{next_url}")
    return browser.submit(
        form, {"login": login, "password": OIDC_PASSWORD}, button=("authorize", "1"), **kwargs
    )


def assert_signed_out(browser: Browser, live) -> None:
    r = browser.go(f"{live.url}/account/profile", stop_at=f"{live.url}/account/login")
    assert r.status_code in (302, 303) and r.final_url.startswith(f"{live.url}/account/login")


def test_no_lsaai_button_unless_configured(live, github):
    page = requests.get(f"{live.url}/account/login", timeout=30)
    assert page.status_code == 200 and "Sign in with GitHub" in page.text
    assert "LifeScience" not in page.text and "lsaai" not in page.text
    assert requests.get(f"{live.url}/oauth2/login/lsaai", timeout=30).status_code == 404


def test_lsaai_sign_in_registers_then_signs_in(lsaai, live, caplog):
    import logging

    from chalicelib.auth import apikeys
    from chalicelib.db import session_scope
    from chalicelib.models import Identity, User
    from tests.support.scan import assert_nowhere_in_clear

    caplog.set_level(logging.DEBUG)
    browser = Browser()
    page = lsaai_sign_in(browser, live)
    assert urlsplit(page.url).path == "/account/register_identity", browser.visited
    assert "LifeScience Login" in page.text and 'value="jdoe"' in page.text
    done = browser.submit(page, {"username": "jane"}, stop_at=f"{live.url}/dashboard")
    assert done.status_code == 303
    with session_scope() as s:
        user = s.query(User).one()
        assert (user.username, user.email) == ("jane", "jane.doe@uni.example")
        identity = s.query(Identity).one()
        assert (identity.provider, identity.provider_user_id) == ("lsaai", JANE_SUB)
        key = apikeys.create(s, user).key
    # The profile lists the identity under the provider's name.
    profile = browser.go(f"{live.url}/account/profile")
    assert profile.status_code == 200
    row = re.search(r'<tr data-provider="lsaai">(.*?)</tr>', profile.text, re.S)
    assert row and "LifeScience Login" in row[1] and "Jane Doe" in row[1]
    # /users/current: the identity as the contract shapes it.
    me = requests.get(f"{live.url}/users/current", headers={"ApiKey": key}, timeout=30)
    assert me.status_code == 200, me.text
    assert set(me.json()["identities"]) == {"lifemonitor", "lsaai"}
    assert me.json()["identities"]["lsaai"] == {
        "sub": JANE_SUB,
        "name": "Jane Doe",
        "username": "jdoe",
        "email": "jane.doe@uni.example",
        "mbox_sha1sum": None,
        "profile": None,
        "picture": None,
        "provider": {
            "uuid": None,
            "name": "lsaai",
            "type": "oauth2_identity_provider",
            "uri": lsaai.issuer,
            "userinfo_endpoint": f"{lsaai.url}/oidc/userinfo",
        },
    }
    # Signed out, signing in again goes straight through.
    again = Browser()
    r = lsaai_sign_in(again, live)
    assert r.status_code == 303 and r.final_url == f"{live.url}/dashboard"
    assert not any("/account/register_identity" in u for u in again.visited)
    assert again.go(f"{live.url}/account/profile").status_code == 200
    # LS AAI's tokens (kept sealed for the person) and our client secret: nowhere in clear.
    state = lsaai._oauth()
    secrets = [*lsaai.tokens, *state.refresh, *lsaai.id_tokens, lsaai.app.client_secret]
    assert len(lsaai.id_tokens) == 2
    assert_nowhere_in_clear(secrets, caplog)


@pytest.mark.parametrize("defect", OIDC_DEFECTS)
def test_lsaai_id_token_defects_are_an_error_page(lsaai, live, defect, caplog):
    import logging

    from chalicelib.db import session_scope
    from chalicelib.models import Identity, User

    caplog.set_level(logging.DEBUG)
    lsaai.id_token_defect = defect
    browser = Browser()
    r = lsaai_sign_in(browser, live)
    assert urlsplit(r.url).path == "/oauth2/authorized/lsaai", browser.visited
    assert r.status_code == 502 and r.headers["Content-Type"].startswith("text/html")
    assert "LifeScience Login sent a sign-in that cannot be verified" in r.text
    assert_signed_out(browser, live)
    with session_scope() as s:
        assert s.query(User).count() == 0 and s.query(Identity).count() == 0
    state = lsaai._oauth()
    secrets = [*lsaai.tokens, *state.refresh, *lsaai.id_tokens, lsaai.app.client_secret]
    log_text = caplog.text + "\n".join(rec.getMessage() for rec in caplog.records)
    assert "ID token refused" in log_text
    assert not [s[:6] for s in secrets if s in log_text]


def test_lsaai_unverified_email_is_not_kept(lsaai, live):
    from chalicelib.db import session_scope
    from chalicelib.models import User

    lsaai.users[JANE_SUB].email_verified = False
    browser = Browser()
    page = lsaai_sign_in(browser, live)
    browser.submit(page, {"username": "jane"}, stop_at=f"{live.url}/dashboard")
    with session_scope() as s:
        assert s.query(User).one().email is None


def test_lsaai_state_mismatch_is_refused(lsaai, live):
    from chalicelib.db import session_scope
    from chalicelib.models import User

    browser = Browser()
    r = lsaai_sign_in(browser, live, stop_at=f"{live.url}/oauth2/authorized/lsaai")
    parts = urlsplit(r.final_url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    forged = f"{live.url}{parts.path}?" + urlencode({**query, "state": "forged"})
    refused = browser.go(forged)
    assert refused.status_code == 400 and "text/html" in refused.headers["Content-Type"]
    assert "invalid or has expired" in refused.text
    assert not lsaai.requests_to(r"^/oidc/token$")  # the code was never exchanged
    assert_signed_out(browser, live)
    with session_scope() as s:
        assert s.query(User).count() == 0


def test_lsaai_discovery_down(lsaai, live):
    lsaai.discovery_down = True
    page = requests.get(f"{live.url}/account/login", timeout=30)
    assert page.status_code == 200
    assert "LifeScience Login (unavailable)" in page.text
    assert not LSAAI_BUTTON.findall(page.text)
    r = requests.get(f"{live.url}/oauth2/login/lsaai", allow_redirects=False, timeout=30)
    assert r.status_code == 503 and r.headers["Content-Type"].startswith("text/html")
    assert "LifeScience Login is not available right now" in r.text


def test_lsaai_connect_then_disconnect(lsaai, live, user):
    """alice (local password) connects her LS AAI identity from the profile, then
    disconnects it."""
    from chalicelib.db import session_scope
    from chalicelib.models import Identity

    browser = Browser()
    browser.http.cookies.set("lm_session", signed_in_cookie(user.id), domain="127.0.0.1", path="/")
    profile = browser.go(f"{live.url}/account/profile")
    [href] = re.findall(r'href="([^"]*/oauth2/login/lsaai[^"]*)"', profile.text)
    form = browser.go(urljoin(profile.url, html.unescape(href)))
    r = browser.submit(
        form,
        {"login": "sam", "password": OIDC_PASSWORD},
        button=("authorize", "1"),
        stop_at=f"{live.url}/account/profile",
    )
    assert r.final_url == f"{live.url}/account/profile", browser.visited
    with session_scope() as s:
        identity = s.query(Identity).one()
        assert (identity.user_id, identity.provider) == (user.id, "lsaai")
    profile = browser.go(f"{live.url}/account/profile")
    assert 'data-provider="lsaai"' in profile.text
    done = browser.submit(
        profile, action="/account/identities/disconnect", stop_at=f"{live.url}/account/profile"
    )
    assert done.status_code == 303
    with session_scope() as s:
        assert s.query(Identity).count() == 0
