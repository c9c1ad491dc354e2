"""Test setup: a real PostgreSQL database, migrated by our own Alembic scripts (without a
server, a CI run or one with `TEST_POSTGRES` set fails at once with one line; only a
developer's machine with no PostgreSQL at all, or `TEST_POSTGRES=sqlite`, runs on SQLite,
said in the report header); an isolated environment per test; the Chalice test client; and
the shared fixtures folder (`../shared/fixtures`, or `LM_SHARED_FIXTURES`), skipped with a
reason where absent."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devtools.postgres import PostgresUnavailable, describe, find_postgres  # noqa: E402
from emulators import SHARED_FIXTURES  # noqa: E402

# Environment the code under test reads; each test starts from these values.
BASE_ENV = {
    "LM_STAGE": "test",
    "LM_SECRETS_BACKEND": "file",
    "EXTERNAL_SERVER_URL": "http://lm.test",
    "LOG_LEVEL": "INFO",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
CLEARED_ENV = (
    "DATABASE_URL",
    "LM_DATA_DIR",
    "LM_SSM_PREFIX",
    "LM_SECRETS_TTL",
    "PORT",
    "LM_TOKEN_EXPIRES_IN",
    "LM_REFRESH_TOKEN_EXPIRES_IN",
    "LM_AUTH_CODE_EXPIRES_IN",
    "LM_GITHUB_CLIENT_ID",
    "LM_GITHUB_URL",
    "LM_GITHUB_API_URL",
    "LM_LSAAI_CLIENT_ID",
    "LM_LSAAI_ISSUER",
    "LM_PROVIDER_TIMEOUT",
    "LM_CRATE_BUCKET",
    "LM_REFRESH_QUEUE_URL",
    "ALLOW_PRIVATE_URLS",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "LM_DB_POOL_SIZE",
    "LM_MIGRATIONS_DIR",
    "LM_DB_TIMEOUT",
    "LM_REFRESH_CONCURRENCY",
    "LM_REFRESH_PER_HOST",
    "LM_LOCAL_REFRESH_INTERVAL",
    "LM_NOTIFICATION_RETENTION_DAYS",
    "LM_STALE_AFTER_DAYS",
    "LM_EMAIL_BACKEND",
    "LM_EMAIL_SENDER",
    "LM_WEBHOOK_QUEUE_URL",
    "LM_WEBHOOK_DISABLE_AFTER",
)

_server = None
_server_found = False


def postgres_server():
    """The session's PostgreSQL server, found once per process (per xdist worker); None
    only when SQLite was asked for. Raises `PostgresUnavailable` when there is none."""
    global _server, _server_found
    if not _server_found:
        _server = find_postgres()
        _server_found = True
    return _server


def worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def pytest_configure(config):
    """Find the database before anything runs: no PostgreSQL (unless SQLite was asked for)
    ends the run here with one line, instead of a green run whose PostgreSQL-only tests
    skipped. The xdist controller (or the single process) looks; a throwaway cluster it
    starts is handed to the workers through the environment they inherit."""
    if hasattr(config, "workerinput") or getattr(config.option, "help", False):
        return
    try:
        server = postgres_server()
    except PostgresUnavailable as exc:
        raise pytest.UsageError(str(exc)) from None
    if server is not None and server.kind == "throwaway":
        os.environ["TEST_DATABASE_URL"] = server.admin_url
        os.environ["TEST_POSTGRES"] = "env"


def pytest_report_header(config):
    return f"database: {describe(postgres_server())}"


def pytest_sessionfinish(session, exitstatus):
    if _server is not None:
        _server.stop()  # throwaway clusters only; never leave a process running


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    """A migrated database for the whole session; tables are emptied after each test."""
    server = postgres_server()
    # Unique per process: concurrent test runs on one server must not share a database.
    name = f"lm_test_{worker_id()}_{os.getpid()}"
    if server is not None:
        url = server.create_database(name)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    os.environ["DATABASE_URL"] = url
    from chalicelib import migrate

    migrate.upgrade("head")
    yield url
    from chalicelib.db import dispose_engines

    dispose_engines()
    if server is not None:
        server.drop_database(name)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Every test sees the same environment, its own data dir and fresh memoised state."""
    for name in CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in BASE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LM_DATA_DIR", str(tmp_path / "data"))
    from chalicelib import secrets

    secrets.reset()
    yield
    secrets.reset()


@pytest.fixture
def db(database_url, monkeypatch):
    """The session database, empty at the start of the test."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    yield database_url
    _empty_tables()


def _empty_tables() -> None:
    from sqlalchemy import text

    from chalicelib.db import get_engine
    from chalicelib.models import Base

    engine = get_engine()
    # DELETE in reverse dependency order, then reset the sequences: the end state of
    # TRUNCATE … RESTART IDENTITY in ~15 ms instead of ~0.5 s a test on Postgres.
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT setval(oid, 1, false) FROM pg_class WHERE relkind = 'S'"))


@pytest.fixture
def postgres(db):
    """The session database, for tests of concurrent writers: they need PostgreSQL's row
    locks and constraints under concurrency (SQLite locks the whole file), so they skip,
    saying so, where the suite runs on SQLite."""
    from chalicelib.db import get_engine

    if get_engine().dialect.name != "postgresql":
        pytest.skip("concurrency bursts need PostgreSQL (SQLite locks the whole file)")
    return db


@pytest.fixture
def session(db):
    """A session on the test database; what it commits is visible to the API under test,
    and `db` empties every table afterwards."""
    from chalicelib.db import get_sessionmaker

    s = get_sessionmaker()()
    try:
        yield s
    finally:
        s.rollback()
        s.close()


@pytest.fixture(scope="session")
def chalice_app():
    from infra.local import install_gateway_responses

    install_gateway_responses()
    import app as app_module

    return app_module.app


@pytest.fixture
def client(chalice_app, db):
    from chalice.test import Client

    with Client(chalice_app, stage_name="test", project_dir=str(ROOT)) as c:
        yield c


@pytest.fixture
def shared_fixtures() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED_FIXTURES} (set LM_SHARED_FIXTURES)")
    return SHARED_FIXTURES


@pytest.fixture
def registry(db):
    """A registered WorkflowHub with our client's plaintext credentials."""
    from chalicelib.db import session_scope
    from chalicelib.services import registries

    with session_scope() as s:
        creds = registries.add_registry(
            s,
            name="WorkflowHub",
            type="seek",
            client_id="wfh-app",
            client_secret="wfh-secret",
            api_url="https://workflowhub.example",
            redirect_uris="https://workflowhub.example",
        )
        return creds


@pytest.fixture
def user(db):
    from chalicelib.db import session_scope
    from chalicelib.services import users

    with session_scope() as s:
        return users.create_user(s, "alice", password="correct horse", email="a@example.org")


@pytest.fixture
def api_key(user):
    """Plaintext API key of `user` with every user scope."""
    from chalicelib.auth import apikeys
    from chalicelib.db import session_scope
    from chalicelib.services import users

    with session_scope() as s:
        return apikeys.create(s, users.get_user(s, "alice")).key


@pytest.fixture
def registry_token(client, registry):
    """A bearer token of the registry client with WorkflowHub's scope list."""
    from chalicelib.auth import scopes as S
    from tests.api.helpers import form

    r = client.http.post(
        "/oauth2/token",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=form(
            client_id=registry.client_id,
            client_secret=registry.client_secret,
            grant_type="client_credentials",
            scope=S.WORKFLOWHUB_REQUEST,
        ),
    )
    assert r.status_code == 200, r.body
    return r.json_body["access_token"]
