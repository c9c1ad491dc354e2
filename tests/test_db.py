"""Database URL resolution, engines and the transaction scope."""

from __future__ import annotations

import pytest
from moto import mock_aws
from sqlalchemy import func, select, text

from chalicelib import db as dbm
from chalicelib.db import database_url, normalize_url, session_scope
from chalicelib.models import User


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@h:5432/d", "postgresql+pg8000://u:p@h:5432/d"),
        ("postgresql://u:p@h/d", "postgresql+pg8000://u:p@h/d"),
        (
            "postgresql+psycopg2://u@h/d?sslmode=require",
            "postgresql+pg8000://u@h/d?sslmode=require",
        ),
        ("postgresql+pg8000://u@h/d", "postgresql+pg8000://u@h/d"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_normalize_url(url, expected):
    assert normalize_url(url) == expected


def test_database_url_from_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db.example:5432/lm")
    assert database_url() == "postgresql+pg8000://u:p@db.example:5432/lm"


def test_database_url_embedded_by_default(tmp_path):
    assert database_url() == f"sqlite:///{(tmp_path / 'data').resolve()}/lifemonitor.db"


def test_database_url_file_backend_ignores_a_stored_url(tmp_path):
    from chalicelib.secrets import get_secrets

    get_secrets().put("database/url", "postgresql://u@h/from-file")
    # The file backend is the embedded setup: the SQLite database is used.
    assert database_url().startswith("sqlite:///")


@pytest.fixture
def ssm_backend(monkeypatch):
    monkeypatch.setenv("LM_SECRETS_BACKEND", "ssm")
    with mock_aws():
        import boto3

        yield boto3.client("ssm")


def test_database_url_from_the_parameter_store(ssm_backend):
    ssm_backend.put_parameter(
        Name="/lifemonitor/test/database/url",
        Type="SecureString",
        Value="postgresql://lm:pw@rds.example/lm",
    )
    assert database_url() == "postgresql+pg8000://lm:pw@rds.example/lm"


def test_environment_wins_over_the_parameter_store(ssm_backend, monkeypatch):
    ssm_backend.put_parameter(
        Name="/lifemonitor/test/database/url",
        Type="SecureString",
        Value="postgresql://lm:pw@rds.example/lm",
    )
    monkeypatch.setenv("DATABASE_URL", "postgresql://env@h/envdb")
    assert database_url() == "postgresql+pg8000://env@h/envdb"


def test_ssm_without_url_falls_back_to_embedded_when_not_deployed(ssm_backend, tmp_path):
    assert database_url() == f"sqlite:///{(tmp_path / 'data').resolve()}/lifemonitor.db"


def test_deployed_ssm_without_url_raises(ssm_backend, monkeypatch):
    monkeypatch.setenv("LM_STAGE", "prod")
    with pytest.raises(RuntimeError, match="/lifemonitor/prod/database/url"):
        database_url()


def test_deployed_ssm_uses_the_stage_prefix(ssm_backend, monkeypatch):
    monkeypatch.setenv("LM_STAGE", "prod")
    ssm_backend.put_parameter(
        Name="/lifemonitor/test/database/url",
        Type="SecureString",
        Value="postgresql://wrong@h/test",
    )
    ssm_backend.put_parameter(
        Name="/lifemonitor/prod/database/url",
        Type="SecureString",
        Value="postgresql://right@h/prod",
    )
    assert database_url() == "postgresql+pg8000://right@h/prod"


def test_embedded_engine_creates_its_directory(tmp_path):
    try:
        engine = dbm.get_engine()
        assert engine.dialect.name == "sqlite"
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert (tmp_path / "data" / "lifemonitor.db").exists()
        assert dbm.get_engine() is engine  # one engine per URL
    finally:
        dbm.dispose_engines()


def _count_users() -> int:
    with session_scope() as s:
        return s.execute(select(func.count()).select_from(User)).scalar_one()


def test_session_scope_commits_on_success(db):
    with session_scope() as s:
        s.add(User(username="committed"))
    assert _count_users() == 1
    with session_scope() as s:
        assert s.query(User).one().username == "committed"


def test_session_scope_rolls_back_on_exception(db):
    with pytest.raises(RuntimeError, match="boom"), session_scope() as s:
        s.add(User(username="rolled-back"))
        s.flush()  # the row reached the database inside the transaction
        raise RuntimeError("boom")
    assert _count_users() == 0


def test_session_scope_rolls_back_on_database_error(db):
    from sqlalchemy.exc import IntegrityError

    from chalicelib.errors import ConflictError

    with session_scope() as s:
        s.add(User(username="dup"))
    # A unique violation is a lost race (or a duplicate): one 409 for every writer.
    with pytest.raises(ConflictError) as caught, session_scope() as s:
        s.add(User(username="other"))
        s.flush()
        s.add(User(username="dup"))
        s.flush()
    assert isinstance(caught.value.__cause__, IntegrityError)
    with session_scope() as s:
        assert [u.username for u in s.query(User)] == ["dup"]


def test_session_scope_leaves_other_database_errors_alone(db):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError), session_scope() as s:
        s.execute(text("SELECT no_such_column FROM users"))


def test_session_scope_keeps_objects_usable_after_commit(db):
    with session_scope() as s:
        user = User(username="kept")
        s.add(user)
    # expire_on_commit=False: attributes stay loaded after the session closed.
    assert user.username == "kept"
    assert user.id is not None


def test_dispose_engines_forgets_engines(db):
    first = dbm.get_engine()
    dbm.dispose_engines()
    second = dbm.get_engine()
    assert second is not first
    assert str(second.url) == str(first.url)
    assert _count_users() == 0


def test_idle_connection_that_died_is_replaced(db, monkeypatch):
    """A pooled connection idle past IDLE_PING_AFTER is pinged at checkout; a dead one (a
    frozen Lambda's, a NAT timeout) is replaced instead of failing the request."""
    from sqlalchemy import text

    from chalicelib import db as dbmod

    engine = dbmod.get_engine()
    if engine.dialect.name != "postgresql":
        pytest.skip("needs a server whose backend can be terminated")
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    # Kill that backend from a connection outside the pool, as a server-side idle timeout
    # would (the pooled one is the one we want dead).
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    outsider = create_engine(engine.url, poolclass=NullPool)
    with outsider.connect() as killer:
        killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        killer.commit()
    outsider.dispose()
    monkeypatch.setattr(dbmod, "IDLE_PING_AFTER", 0.0)  # every checkout counts as idle
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid


def test_busy_connections_are_not_pinged(db):
    from sqlalchemy import event, text

    from chalicelib import db as dbmod

    engine = dbmod.get_engine()
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    statements = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.connect() as conn:  # just checked in: no ping
            conn.execute(text("SELECT 2"))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert statements == ["SELECT 2"]


def test_read_only_requests_skip_begin_and_commit(db):
    """GET routes run their sessions in autocommit: no BEGIN/COMMIT round trips."""
    from sqlalchemy import event, text

    from chalicelib import db as dbmod

    engine = dbmod.get_engine()
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement.split()[0].upper())

    def on_commit(conn):
        seen.append("COMMIT")

    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "commit", on_commit)
    try:
        token = dbmod.read_only.set(True)
        try:
            with dbmod.session_scope() as s:
                s.execute(text("SELECT 1"))
        finally:
            dbmod.read_only.reset(token)
        read = list(seen)
        seen.clear()
        with dbmod.session_scope() as s:
            s.execute(text("SELECT 1"))
        write = list(seen)
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine, "commit", on_commit)
    assert read == ["SELECT"]
    assert write == ["SELECT", "COMMIT"]
