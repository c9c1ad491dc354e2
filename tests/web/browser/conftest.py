"""Browser tests: Debian's `chromium` driven by Playwright (never `playwright install`),
against `python -m infra.local` — `make run`'s server — on a free loopback port, with the
emulated WorkflowHub, GitHub and LifeScience Login (OpenID Connect) as login providers.
Skipped, with the reason, only where Chromium or Playwright cannot be had. Screenshots of
every page go to `test-output/web/<test>/` (or `$LM_TEST_OUTPUT/web/<test>/`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT

GITHUB_CLIENT_ID = "lm-github-app"
GITHUB_CLIENT_SECRET = "lm-github-secret"
LSAAI_CLIENT_ID = "lm-lsaai-client"
LSAAI_CLIENT_SECRET = "lm-lsaai-secret-for-the-browser-tests"
WFH_APP_ID = "lm-at-wfh"
WFH_APP_SECRET = "lm-at-wfh-secret"
REGISTRY_NAME = "WorkflowHub"
REGISTRY_CLIENT_NAME = "wfh"


def chromium_executable() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = chromium_executable()
    if path is None:
        pytest.skip("Debian's chromium is not installed (make install-dev installs it as root)")
    return path


@pytest.fixture(scope="session")
def playwright_browser(chromium_path):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)"
    )
    with sync_api.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=chromium_path, headless=True)
        except Exception as exc:  # a broken install: say why, do not fail every test
            pytest.skip(f"chromium at {chromium_path} cannot be started: {exc}")
        yield browser
        browser.close()


def output_root() -> Path:
    return Path(os.environ.get("LM_TEST_OUTPUT") or ROOT / "test-output") / "web"


@dataclass
class LiveServer:
    url: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen
    log: Path
    wfh: object
    github: object
    lsaai: object
    seen: dict = field(default_factory=dict)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _wait_until_up(server: LiveServer, timeout: float = 90.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{server.log_tail()}")
        try:
            requests.get(server.url + "/static/lifemonitor.css", timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"the server did not answer within {timeout}s:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def live_server(database_url, tmp_path_factory, playwright_browser):
    """`python -m infra.local` on a free port against the test database, with the emulated
    WorkflowHub, GitHub and LS AAI; one per test process."""
    from emulators.github_oauth import GitHubOAuthEmulator
    from emulators.oidc import OIDCEmulator
    from emulators.seek import WorkflowHubEmulator
    from tests.support.fileserver import unused_port

    wfh = WorkflowHubEmulator().start()
    github = GitHubOAuthEmulator().start()
    lsaai = OIDCEmulator().start()
    port = unused_port()
    data_dir = tmp_path_factory.mktemp("live") / "data"
    log = tmp_path_factory.mktemp("live-log") / "server.log"
    env = {
        "DATABASE_URL": database_url,
        "LM_DATA_DIR": str(data_dir),
        "LM_SECRETS_BACKEND": "file",
        "EXTERNAL_SERVER_URL": f"http://127.0.0.1:{port}",
        "ALLOW_PRIVATE_URLS": "1",  # the emulated providers are on loopback
        "LM_GITHUB_CLIENT_ID": GITHUB_CLIENT_ID,
        "LM_GITHUB_URL": github.url,
        "LM_GITHUB_API_URL": github.url,
        "LM_LSAAI_CLIENT_ID": LSAAI_CLIENT_ID,
        "LM_LSAAI_ISSUER": lsaai.issuer,
        "LM_LOCAL_REFRESH_INTERVAL": "0",
        "LOG_LEVEL": "INFO",
    }
    from tests.conftest import BASE_ENV, CLEARED_ENV

    process_env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    process_env.update({**BASE_ENV, **env, "PYTHONUNBUFFERED": "1"})
    process_env.pop("PYTEST_XDIST_WORKER", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "infra.local",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--stage",
                "test",
                "--no-autoreload",
            ],
            cwd=ROOT,
            env=process_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(env["EXTERNAL_SERVER_URL"], data_dir, env, process, log, wfh, github, lsaai)
    try:
        _wait_until_up(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        wfh.stop()
        github.stop()
        lsaai.stop()


@pytest.fixture
def live(live_server, db, monkeypatch):
    """The live server, this test's environment pointed at its data (so what a test sets
    up — registries, secrets, users — is what the server sees) and fresh emulators with
    our OAuth apps registered on them."""
    for name, value in live_server.env.items():
        monkeypatch.setenv(name, value)
    from chalicelib import secrets

    secrets.reset()
    live_server.wfh.reset()
    live_server.github.reset()
    live_server.lsaai.reset()
    live_server.lsaai.register_oauth_app(
        [f"{live_server.url}/oauth2/authorized/lsaai"],
        client_id=LSAAI_CLIENT_ID,
        client_secret=LSAAI_CLIENT_SECRET,
    )
    live_server.github.register_oauth_app(
        [f"{live_server.url}/oauth2/authorized/github"],
        client_id=GITHUB_CLIENT_ID,
        client_secret=GITHUB_CLIENT_SECRET,
    )
    live_server.wfh.register_oauth_app(
        [f"{live_server.url}/oauth2/authorized/{REGISTRY_CLIENT_NAME}"],
        client_id=WFH_APP_ID,
        client_secret=WFH_APP_SECRET,
    )
    from chalicelib.auth.providers import GITHUB_SECRET_KEY, LSAAI_SECRET_KEY

    secrets.get_secrets().put(GITHUB_SECRET_KEY, GITHUB_CLIENT_SECRET)
    secrets.get_secrets().put(LSAAI_SECRET_KEY, LSAAI_CLIENT_SECRET)
    yield live_server


@pytest.fixture
def registry(live):
    """The emulated WorkflowHub, registered as `registry add` would."""
    from chalicelib.db import session_scope
    from chalicelib.services import registries

    with session_scope() as s:
        return registries.add_registry(
            s,
            name=REGISTRY_NAME,
            type="seek",
            client_id=WFH_APP_ID,
            client_secret=WFH_APP_SECRET,
            api_url=live.wfh.url,
            client_name=REGISTRY_CLIENT_NAME,
            redirect_uris=f"{live.wfh.url}/callback",
        )


@pytest.fixture
def local_user(live):
    from chalicelib.db import session_scope
    from chalicelib.services import users

    with session_scope() as s:
        users.create_user(s, "alice", password="correct horse", email="alice@example.org")
    return "alice", "correct horse"


class Shots:
    """Numbered full-page screenshots of one test."""

    def __init__(self, page, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.count = 0
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        self.count += 1
        return self.folder / f"{self.count:02d}-{re.sub(r'[^A-Za-z0-9_-]+', '-', name)}.png"

    def __call__(self, name: str) -> Path:
        path = self._path(name)
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def element(self, locator, name: str) -> Path:
        """Only one part of a long page (Swagger UI's operations)."""
        path = self._path(name)
        locator.screenshot(path=str(path))
        return path


@pytest.fixture
def page(playwright_browser, live, request):
    """A fresh browser context (no cookies) and page. `page.console_errors` collects script
    errors and failed loads of page assets (tests assert it stays empty)."""
    context = playwright_browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(15000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))

    def failed_asset(response) -> None:
        kind = response.request.resource_type
        asset = kind in {"stylesheet", "script", "image", "font"}
        # The emulators serve no favicon: not ours to judge.
        if response.status >= 400 and asset and not response.url.endswith("/favicon.ico"):
            errors.append(f"{response.status} {response.url}")

    tab.on("response", failed_asset)
    tab.console_errors = errors
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)
    tab.shots = Shots(tab, output_root() / name)
    yield tab
    context.close()


def local_login(page, base: str, username: str, password: str) -> None:
    page.goto(base + "/account/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/account/profile.*"))


def assert_not_in_clear(live: LiveServer, secrets: list[str]) -> None:
    """None of `secrets` (keys, client secrets, codes, tokens) in any table of the database
    or in the server's log."""
    import json

    from sqlalchemy import select

    from chalicelib.db import get_engine
    from chalicelib.models import Base

    secrets = [s for s in secrets if s and len(s) >= 16]
    assert secrets
    leaks = []
    with get_engine().connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                text = json.dumps([str(v) for v in row])
                leaks += [(table.name, s[:6]) for s in secrets if s in text]
    assert not leaks, f"credentials in clear in the database: {leaks}"
    log = live.log.read_text(errors="replace")
    assert "GET /account/profile" in log, "the server log holds no request: nothing proven"
    leaked = [s[:6] for s in secrets if s in log]
    assert not leaked, f"credentials in clear in the server log: {leaked}"
