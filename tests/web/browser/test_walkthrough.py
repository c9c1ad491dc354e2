"""In headless Chromium: the guide's walkthrough (Log in → Sign in with the WorkflowHub →
register the identity → profile → API keys → NEW → the key in /ui), GitHub login,
LifeScience Login (LS AAI, OpenID Connect), local
accounts, profile tabs, key deletion, logout, OAuth apps with a real authorization-code +
PKCE exchange and a refresh, and the refusals (CSRF, cross-site post, open redirect)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.web.browser.conftest import (
    REGISTRY_CLIENT_NAME,
    REGISTRY_NAME,
    assert_not_in_clear,
    local_login,
)

pytestmark = pytest.mark.browser


def api_key_from_page(page) -> str:
    key = page.get_by_test_id("new-api-key").inner_text().strip()
    assert len(key) >= 40
    return key


def new_api_key(page, base: str) -> str:
    page.goto(base + "/account/profile?currentView=apiKeysTab")
    page.get_by_role("button", name="NEW").click()
    page.wait_for_selector("[data-testid=new-api-key]")
    return api_key_from_page(page)


def swagger_try(page, base: str, key: str, shots, expect_in_registries: str) -> str:
    """In the API explorer: Authorize with the key, then "Try it out" on GET /registries
    and GET /users/current; the latter's body is returned (it needs the key)."""
    page.goto(base + "/ui")
    page.locator("button.authorize").first.click()
    dialog = page.locator(".modal-ux")
    apikey_box = dialog.locator(".auth-container").filter(has_text="apiKey")
    apikey_box.locator("input").fill(key)
    apikey_box.get_by_role("button", name="Authorize").click()
    shots.element(dialog, "swagger-authorize")
    dialog.get_by_role("button", name="Close").first.click()

    bodies = {}
    for path in ("/registries", "/users/current"):
        block = page.locator(f".opblock-get:has(.opblock-summary-path[data-path='{path}'])")
        block.locator(".opblock-summary").first.click()
        block.get_by_role("button", name="Try it out").click()
        with page.expect_response(lambda r, p=path: urlsplit(r.url).path == p) as info:
            block.get_by_role("button", name="Execute").click()
        response = info.value
        assert response.status == 200, response.text()
        bodies[path] = response.text()
        block.locator(".live-responses-table").wait_for()
        shots.element(block, f"swagger-{path.strip('/').replace('/', '-')}")
        if path == "/users/current":
            assert response.request.headers.get("apikey") == key
    assert expect_in_registries in bodies["/registries"]
    return bodies["/users/current"]


def test_workflowhub_walkthrough(page, live, registry):
    """The guide: Log in → Sign in with the WorkflowHub → register the identity → profile →
    API keys → NEW → use the key in the API explorer."""
    base, shots = live.url, page.shots
    page.goto(base + "/")
    shots("landing")
    page.get_by_role("link", name="Log in").first.click()
    page.wait_for_url(re.compile(r".*/account/login.*"))
    shots("login")
    page.get_by_role("link", name=f"Sign in with {REGISTRY_NAME}").click()
    # The WorkflowHub's own sign-in form (Doorkeeper, emulated).
    page.wait_for_url(re.compile(re.escape(live.wfh.url) + r"/oauth/authorize.*"))
    shots("workflowhub-sign-in")
    page.get_by_label("Login").fill("user1")
    page.get_by_label("Password").fill("seek-emulator")
    page.get_by_role("button", name="Sign in and authorize").click()
    page.wait_for_url(re.compile(r".*/account/register_identity.*"))
    shots("register-identity")
    username = page.get_by_label("Username")
    assert username.input_value()  # a proposed username
    username.fill("user1-lm")
    page.get_by_role("button", name="Create my account").click()
    page.wait_for_url(re.compile(r".*/account/profile.*"))
    assert "Profile of user1-lm" in page.content()
    assert page.locator(f"tr[data-provider='{REGISTRY_CLIENT_NAME}']").count() == 1
    shots("profile-account")
    page.get_by_role("link", name="API keys").click()
    shots("profile-api-keys")
    page.get_by_role("button", name="NEW").click()
    key = api_key_from_page(page)
    shots("api-key-new")
    body = swagger_try(page, base, key, shots, expect_in_registries=REGISTRY_NAME)
    assert "user1-lm" in body
    # The identity resolves the person for the registry as well.
    assert REGISTRY_CLIENT_NAME in body or REGISTRY_NAME in body or "identities" in body
    assert not page.console_errors, page.console_errors


def test_github_login_and_logout(page, live):
    base, shots = live.url, page.shots
    page.goto(base + "/account/login")
    page.get_by_role("link", name="Sign in with GitHub").click()
    page.wait_for_url(re.compile(re.escape(live.github.url) + r"/login/oauth/authorize.*"))
    shots("github-sign-in")
    page.get_by_label("Login").fill("octocat")
    page.get_by_label("Password").fill("github-emulator")
    page.get_by_role("button", name="Sign in and authorize").click()
    page.wait_for_url(re.compile(r".*/account/register_identity.*"))
    shots("register-identity")
    page.get_by_role("button", name="Create my account").click()
    page.wait_for_url(re.compile(r".*/account/profile.*"))
    assert page.locator("tr[data-provider='github']").count() == 1
    shots("profile")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(base + "/")
    shots("logged-out")
    assert page.get_by_role("link", name="Log in").count() >= 1
    # Signing in again finds the identity: straight to the profile, no registration.
    page.goto(base + "/account/login?next=/dashboard")
    page.get_by_role("link", name="Sign in with GitHub").click()
    page.get_by_label("Login").fill("octocat")
    page.get_by_label("Password").fill("github-emulator")
    page.get_by_role("button", name="Sign in and authorize").click()
    page.wait_for_url(base + "/dashboard")
    shots("dashboard")
    assert not page.console_errors, page.console_errors


def test_lifescience_login(page, live):
    """Sign in with LifeScience Login (the emulated LS AAI): its form, the username proposed
    from the LS AAI username, the identity in the profile; a second sign-in goes through."""
    from emulators.oidc import DEFAULT_PASSWORD

    base, shots = live.url, page.shots
    page.goto(base + "/account/login?next=/account/profile")
    page.get_by_role("link", name="Sign in with LifeScience Login").click()
    page.wait_for_url(re.compile(re.escape(live.lsaai.url) + r"/oidc/authorize.*"))
    shots("lsaai-sign-in")
    page.get_by_label("Login").fill("jdoe")
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Sign in and authorize").click()
    page.wait_for_url(re.compile(r".*/account/register_identity.*"))
    assert page.get_by_label("Username").input_value() == "jdoe"
    assert "LifeScience Login" in page.content()
    shots("register-identity")
    page.get_by_role("button", name="Create my account").click()
    page.wait_for_url(re.compile(r".*/account/profile.*"))
    row = page.locator("tr[data-provider='lsaai']")
    assert row.count() == 1
    assert "LifeScience Login" in row.inner_text() and "Jane Doe" in row.inner_text()
    shots("profile")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(base + "/")
    page.goto(base + "/account/login?next=/dashboard")
    page.get_by_role("link", name="Sign in with LifeScience Login").click()
    page.get_by_label("Login").fill("jdoe")
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Sign in and authorize").click()
    page.wait_for_url(base + "/dashboard")
    assert not page.console_errors, page.console_errors


def test_local_login_tabs_api_key_in_swagger_then_deleted(page, live, local_user):
    base, shots = live.url, page.shots
    local_login(page, base, *local_user)
    for tab, label in [
        ("accountsTab", "Account"),
        ("apiKeysTab", "API keys"),
        ("oauth2ClientsTab", "OAuth apps"),
        ("notificationsTab", "Notifications"),
    ]:
        page.get_by_role("link", name=label, exact=True).click()
        page.wait_for_url(re.compile(rf".*currentView={tab}.*"))
        assert page.locator(f"#{tab}").is_visible()
        shots(f"tab-{tab}")
    key = new_api_key(page, base)
    shots("api-key-new")
    page.goto(base + "/account/profile?currentView=apiKeysTab")  # shown once: never again
    assert key not in page.content()
    body = swagger_try(page, base, key, shots, expect_in_registries="[")
    assert '"alice"' in body or "alice" in body
    page.goto(base + "/account/profile?currentView=apiKeysTab")
    prefix = key[:8]
    row = page.locator(f"tr[data-prefix='{prefix}']")
    assert row.count() == 1
    row.get_by_role("button", name=f"Delete key {prefix}").click()
    page.wait_for_url(re.compile(r".*currentView=apiKeysTab.*"))
    shots("api-key-deleted")
    assert page.locator(f"tr[data-prefix='{prefix}']").count() == 0
    r = requests.get(base + "/users/current", headers={"ApiKey": key}, timeout=10)
    assert r.status_code == 401
    live_key = new_api_key(page, base)  # one still stored: only its hash may be there
    assert_not_in_clear(live, [key, live_key])
    page.get_by_role("button", name="Log out").click()
    page.goto(base + "/account/profile")
    page.wait_for_url(re.compile(r".*/account/login\?next=.*"))
    shots("after-logout")
    assert not page.console_errors, page.console_errors


def test_notifications_tab(page, live, local_user):
    base, shots = live.url, page.shots
    local_login(page, base, *local_user)
    page.goto(base + "/account/profile?currentView=notificationsTab")
    page.get_by_label("E-mail address").fill("alice@new.example")
    page.get_by_role("button", name="Save").first.click()
    page.wait_for_url(re.compile(r".*currentView=notificationsTab.*"))
    assert "not verified" in page.content()
    assert page.get_by_role("button", name="Send verification email").count() == 1
    box = page.get_by_label("Send me e-mail notifications about my workflows")
    assert box.is_checked()
    box.uncheck()
    page.get_by_role("button", name="Save").nth(1).click()
    page.wait_for_url(re.compile(r".*currentView=notificationsTab.*"))
    assert not page.get_by_label("Send me e-mail notifications about my workflows").is_checked()
    shots("notifications")


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_oauth_app_authorization_code_pkce_and_refresh(page, live, local_user):
    base, shots = live.url, page.shots
    redirect_uri = "http://app.test/callback"
    local_login(page, base, *local_user)
    page.goto(base + "/account/profile?currentView=oauth2ClientsTab")
    page.get_by_label("Name").fill("My notebook")
    page.get_by_label("Redirect URIs (one a line)").fill(redirect_uri)
    for scope in ("user.profile", "workflow.read"):
        page.locator(f"input[name=scopes][value='{scope}']").check()
    shots("oauth-app-form")
    page.get_by_role("button", name="Create app").click()
    page.wait_for_selector("[data-testid=client-secret]")
    client_id = page.get_by_test_id("client-id").inner_text().strip()
    client_secret = page.get_by_test_id("client-secret").inner_text().strip()
    shots("oauth-app-created")
    page.goto(base + "/account/profile?currentView=oauth2ClientsTab")
    assert client_secret not in page.content()  # shown once
    assert page.get_by_role("button", name="Delete app My notebook").count() == 1

    # The app sends the browser to /oauth2/authorize with a PKCE challenge.
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(8)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": "user.profile workflow.read",
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    landed = []

    def catch(route):
        landed.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<h1>App callback</h1>")

    page.route("http://app.test/**", catch)
    page.goto(f"{base}/oauth2/authorize?{query}")
    shots("consent")
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(re.compile(r"http://app\.test/callback.*"))
    params = parse_qs(urlsplit(landed[-1]).query)
    assert params["state"] == [state]
    code = params["code"][0]

    token_url = base + "/oauth2/token"
    # A wrong PKCE verifier is refused (and the code is spent: codes are single-use).
    bad = requests.post(
        token_url,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "client_secret": client_secret,
            "code_verifier": "x" * 50,
        },
        timeout=10,
    )
    assert bad.status_code == 400, bad.text
    # Restart the flow: the consent is remembered or asked again; a fresh code either way.
    page.goto(f"{base}/oauth2/authorize?{query}")
    if "/oauth2/authorize" in page.url:
        page.get_by_role("button", name="Allow").click()
    page.wait_for_url(re.compile(r"http://app\.test/callback.*"))
    code = parse_qs(urlsplit(landed[-1]).query)["code"][0]
    r = requests.post(
        token_url,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "client_secret": client_secret,
            "code_verifier": verifier,
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    tokens = r.json()
    me = requests.get(
        base + "/users/current",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=10,
    )
    assert me.status_code == 200 and me.json()["username"] == "alice"
    # Refresh: a new pair; the old refresh token is spent.
    r = requests.post(
        token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client_id,
            "client_secret": client_secret,
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    refreshed = r.json()
    assert refreshed["access_token"] != tokens["access_token"]
    again = requests.post(
        token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client_id,
            "client_secret": client_secret,
        },
        timeout=10,
    )
    assert again.status_code == 400
    me = requests.get(
        base + "/users/current",
        headers={"Authorization": f"Bearer {refreshed['access_token']}"},
        timeout=10,
    )
    assert me.status_code == 200
    assert_not_in_clear(
        live,
        [
            client_secret,
            code,
            tokens["access_token"],
            tokens["refresh_token"],
            refreshed["access_token"],
            refreshed["refresh_token"],
        ],
    )
    # Deleting the app from the profile ends its tokens.
    page.goto(base + "/account/profile?currentView=oauth2ClientsTab")
    page.get_by_role("button", name="Delete app My notebook").click()
    page.wait_for_url(re.compile(r".*currentView=oauth2ClientsTab.*"))
    shots("oauth-app-deleted")
    me = requests.get(
        base + "/users/current",
        headers={"Authorization": f"Bearer {refreshed['access_token']}"},
        timeout=10,
    )
    assert me.status_code == 401


def test_tampered_csrf_token_is_refused(page, live, local_user):
    base, shots = live.url, page.shots
    local_login(page, base, *local_user)
    page.goto(base + "/account/profile?currentView=apiKeysTab")
    page.eval_on_selector_all(
        "input[name=csrf_token]", "els => els.forEach(e => e.value = 'forged')"
    )
    with page.expect_response(lambda r: r.url.endswith("/account/create_apikey")) as info:
        page.get_by_role("button", name="NEW").click()
    assert info.value.status == 403
    shots("csrf-refused")
    assert "security token" in page.content()
    page.goto(base + "/account/profile?currentView=apiKeysTab")
    assert "You have no API key" in page.content()


def test_cross_site_form_post_is_refused(page, live, local_user):
    """A page on another site posts a form to us: the session cookie (SameSite=Lax) does
    not go with it, so no token matches; nothing is created."""
    base, shots = live.url, page.shots
    local_login(page, base, *local_user)
    evil = f"""<form id=f method=post action="{base}/account/create_apikey">
      <input name=csrf_token value=guess></form>
      <script>document.getElementById('f').submit()</script>"""
    page.route(
        "http://evil.test/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body=evil),
    )
    with page.expect_response(lambda r: r.url.endswith("/account/create_apikey")) as info:
        page.goto("http://evil.test/")
    assert info.value.status == 403
    page.wait_for_load_state()
    shots("cross-site-refused")
    page.goto(base + "/account/profile?currentView=apiKeysTab")
    assert "You have no API key" in page.content()


@pytest.mark.parametrize("target", ["https://evil.test/", "//evil.test/x"])
def test_open_redirect_is_refused(page, live, local_user, target):
    base = live.url
    page.goto(f"{base}/account/login?{urlencode({'next': target})}")
    page.get_by_label("Username").fill(local_user[0])
    page.get_by_label("Password").fill(local_user[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    assert page.url.startswith(base + "/account/profile"), page.url
    page.shots("landed-on-our-profile")


def test_dashboard_and_workflow_pages(page, live, local_user, registry):
    from chalicelib.auth import apikeys
    from chalicelib.db import session_scope
    from chalicelib.services import users
    from tests.support import api_data
    from tests.support.api_data import b64, crate

    with session_scope() as s:
        key = apikeys.create(s, users.get_user(s, "alice")).key
    body = {
        "rocrate": b64(
            crate(
                name="browser-wf",
                instances=[("jenkins", "https://jenkins.example", "job/a/")],
            )
        ),
        "version": "1",
        "public": False,
        "name": "browser-wf",
    }
    r = requests.post(
        live.url + "/users/current/workflows",
        json=body,
        headers={"ApiKey": key},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    uuid = r.json()["uuid"]
    (instance,) = api_data.instance_uuids(uuid)
    api_data.store_builds(instance, [api_data.build("7", "passed", 5)])
    base, shots = live.url, page.shots
    page.goto(base + "/dashboard")
    assert "browser-wf" not in page.content()  # private, signed out
    local_login(page, base, "alice", "correct horse")
    page.goto(base + "/dashboard")
    shots("dashboard")
    page.get_by_role("link", name="browser-wf").click()
    page.wait_for_url(re.compile(rf".*/workflow/{uuid}.*"))
    shots("workflow")
    assert "https://jenkins.example/job/a/" in page.content()
    assert "https://ci.example/builds/7" in page.content()
    page.goto(f"{base}/workflow;uuid={uuid}")
    assert page.get_by_role("heading", name="browser-wf").count() == 1
    shots("workflow-matrix-link")
    assert not page.console_errors, page.console_errors


UNLABELLED_FIELDS = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(e => e.type !== 'hidden')
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
               && !(e.tagName === 'BUTTON' && e.textContent.trim()))
  .map(e => e.outerHTML)"""


def assert_accessible_basics(page) -> None:
    """Every visible field has a label, the page a title, one h1 and a lang."""
    assert page.evaluate(UNLABELLED_FIELDS) == []
    assert page.title().endswith("LifeMonitor")
    assert page.locator("h1").count() == 1
    assert page.evaluate("document.documentElement.lang") == "en"


def test_every_page_renders_labelled(page, live, local_user):
    """Register, logout, error pages and each profile tab: rendered, labelled, their
    stylesheet loaded, a screenshot each."""
    base, shots = live.url, page.shots
    page.goto(base + "/account/register")
    assert_accessible_basics(page)
    shots("register")
    page.get_by_label("Username").fill("newcomer")
    page.get_by_label("E-mail (optional)").fill("new@example.org")
    page.get_by_label("Password (8 characters at least)").fill("long enough")
    page.get_by_label("Password again").fill("long enough")
    page.get_by_role("button", name="Create the account").click()
    page.wait_for_url(re.compile(r".*/account/profile.*"))
    assert "Welcome, newcomer" in page.content()
    for tab in ("accountsTab", "apiKeysTab", "oauth2ClientsTab", "notificationsTab"):
        page.goto(f"{base}/account/profile?currentView={tab}")
        assert_accessible_basics(page)
    page.goto(base + "/dashboard")
    assert_accessible_basics(page)
    page.goto(base + "/account/logout")
    assert_accessible_basics(page)
    shots("logout-confirm")
    page.goto(base + "/workflow/00000000-0000-0000-0000-000000000000")
    assert page.get_by_role("heading", name="Not Found").count() == 1
    shots("not-found")
    page.goto(base + "/")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(base + "/")
    assert_accessible_basics(page)
    shots("landing-logged-out")
    page.goto(base + "/account/login")
    assert_accessible_basics(page)
    assert (
        page.evaluate("getComputedStyle(document.querySelector('header.site')).backgroundColor")
        == "rgb(18, 50, 91)"
    )  # the stylesheet applied
    assert not page.console_errors, page.console_errors


def test_connect_and_disconnect_an_identity_from_the_profile(page, live, local_user, registry):
    base, shots = live.url, page.shots
    local_login(page, base, *local_user)
    assert "No identity is linked to this account." in page.content()
    page.get_by_role("link", name=f"Connect {REGISTRY_NAME}").click()
    page.wait_for_url(re.compile(re.escape(live.wfh.url) + r"/oauth/authorize.*"))
    page.get_by_label("Login").fill("user2")
    page.get_by_label("Password").fill("seek-emulator")
    page.get_by_role("button", name="Sign in and authorize").click()
    page.wait_for_url(re.compile(r".*/account/profile.*"))
    row = page.locator(f"tr[data-provider='{REGISTRY_CLIENT_NAME}']")
    assert row.count() == 1
    shots("identity-connected")
    # alice has a password: the identity is not her only way in, so it may go.
    row.get_by_role("button", name=f"Disconnect {REGISTRY_NAME}").click()
    page.wait_for_url(re.compile(r".*currentView=accountsTab.*"))
    assert page.locator(f"tr[data-provider='{REGISTRY_CLIENT_NAME}']").count() == 0
    shots("identity-disconnected")
    assert not page.console_errors, page.console_errors
