"""The sign-in pages over real HTTP: GitHub login through its emulator's form, a provider
that is down or refuses (a page, never a 500), the register-identity form (validation, and
a burst of identical submissions on PostgreSQL), the merge offer, connecting an identity."""

from __future__ import annotations

import threading
from urllib.parse import urlencode, urlsplit

import pytest
import requests

from emulators.github_oauth import DEFAULT_PASSWORD, GitHubOAuthEmulator
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
