"""Tests for the real-PostgreSQL helper (tests/support/postgres.py)."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import sqlalchemy
from sqlalchemy.pool import NullPool

# Relative import: works whether or not tests/ itself is a package.
from .postgres import (
    PostgresServer,
    _pid_alive,
    _postmaster_pid,
    describe,
    find_pg_bin,
    find_postgres,
    normalize_url,
)


def _unique_name() -> str:
    # Unique per run/worker so parallel (xdist) runs never collide.
    return f"t_pgsupport_{uuid.uuid4().hex[:12]}"


def _round_trip(url: str) -> None:
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (id serial PRIMARY KEY, s text)")
            conn.execute(sqlalchemy.text("INSERT INTO t (s) VALUES (:s)"), {"s": "héllo"})
            assert conn.exec_driver_sql("SELECT s FROM t").scalar_one() == "héllo"
            assert conn.exec_driver_sql("SELECT current_database()").scalar_one() == (
                sqlalchemy.engine.make_url(url).database
            )
    finally:
        engine.dispose()


def _processes_mentioning(text: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line contains text."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and _pid_alive(int(entry)):
            found.append(int(entry))
    return found


# -- (a) the server find_postgres() picks on this machine ---------------------
def test_find_postgres_and_database_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    # Make the search deterministic regardless of the caller's environment.
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    monkeypatch.delenv("TEST_POSTGRES", raising=False)
    server = find_postgres()
    assert server is not None, describe(server)
    try:
        assert server.kind in ("local", "throwaway")
        assert server.admin_url.startswith("postgresql+pg8000://")
        assert describe(server).startswith(f"PostgreSQL {server.version} ({server.kind} ")

        name = _unique_name()
        url = server.create_database(name)
        assert url == server.url_for(name)
        _round_trip(url)
        # Re-creating must wipe the old contents, even with a session still open.
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        leaked = engine.connect()
        try:
            url = server.create_database(name)
            _round_trip(url)  # would fail on "relation t already exists"
        finally:
            leaked.invalidate()
            engine.dispose()
        server.drop_database(name)
        server.drop_database(name)  # missing database: no error
        with pytest.raises(sqlalchemy.exc.DBAPIError):
            sqlalchemy.create_engine(url, poolclass=NullPool).connect().close()
    finally:
        server.stop()


def test_local_server_is_found_here(monkeypatch: pytest.MonkeyPatch) -> None:
    # This machine runs PostgreSQL on 127.0.0.1:5432 (trust, database "test").
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    server = find_postgres(prefer="local")
    if server is None:
        pytest.skip("no local PostgreSQL on 127.0.0.1:5432: " + describe(None))
    assert server.kind == "local"
    assert (server.host, server.port) == ("127.0.0.1", 5432)
    assert describe(server) == f"PostgreSQL {server.version} (local 127.0.0.1:5432)"
    server.stop()  # no-op for a server we don't own
    assert server.version  # still reachable


def test_invalid_and_protected_names_rejected() -> None:
    server = PostgresServer("local", "postgresql+pg8000://u@127.0.0.1:5432/test")
    for bad in ("Test", "1abc", "a-b", 'x"; DROP', "", "a" * 64):
        with pytest.raises(ValueError):
            server.url_for(bad)
        with pytest.raises(ValueError):
            server.create_database(bad)
    for protected in ("postgres", "template1", "test"):
        with pytest.raises(ValueError, match="refusing"):
            server._drop(None, protected)  # type: ignore[arg-type]


# -- (b) the throwaway cluster ----------------------------------------------
@pytest.mark.skipif(find_pg_bin() is None, reason="initdb/pg_ctl not installed")
def test_throwaway_cluster_lifecycle() -> None:
    started = time.monotonic()
    server = find_postgres(prefer="throwaway")
    elapsed = time.monotonic() - started
    assert server is not None, describe(None)
    print(f"throwaway cluster started in {elapsed:.2f}s: {describe(server)}")
    try:
        assert server.kind == "throwaway"
        assert server.base_dir and server.data_dir
        assert os.path.isdir(server.data_dir)
        pid = _postmaster_pid(server.data_dir)
        assert pid is not None and _pid_alive(pid)
        assert _processes_mentioning(server.data_dir)

        name = _unique_name()
        _round_trip(server.create_database(name))
        server.drop_database(name)
    finally:
        server.stop()

    assert not os.path.exists(server.base_dir)
    assert not _pid_alive(pid)
    assert _processes_mentioning(server.data_dir) == []
    server.stop()  # idempotent (atexit will call it again)


# -- (c) TEST_DATABASE_URL normalisation ---------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://u:p@db.example:6543/app",
        "postgres://u:p@db.example:6543/app",
        "postgresql+pg8000://u:p@db.example:6543/app",
        "  POSTGRES://u:p@db.example:6543/app\n",
    ],
)
def test_normalize_url_accepts_postgres_forms(raw: str) -> None:
    assert normalize_url(raw) == "postgresql+pg8000://u:p@db.example:6543/app"


@pytest.mark.parametrize(
    "raw", ["mysql://u@h/db", "sqlite:///x.db", "postgresql+psycopg2://u@h/db", "u@h/db"]
)
def test_normalize_url_rejects_other_schemes(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_url(raw)


def test_env_url_unreachable_falls_through(monkeypatch: pytest.MonkeyPatch) -> None:
    # Port 1 on localhost refuses connections immediately.
    monkeypatch.setenv("TEST_DATABASE_URL", "postgres://nobody@127.0.0.1:1/x")
    assert find_postgres(prefer="env") is None
    assert "env: postgresql+pg8000://nobody@127.0.0.1:1/x" in describe(None)


def test_env_url_is_used_first(monkeypatch: pytest.MonkeyPatch) -> None:
    local = find_postgres(prefer="local")
    if local is None:
        pytest.skip("needs the local server to point TEST_DATABASE_URL at")
    plain = local.admin_url.replace("postgresql+pg8000://", "postgresql://")
    monkeypatch.setenv("TEST_DATABASE_URL", plain)
    server = find_postgres()
    assert server is not None and server.kind == "env"
    assert server.admin_url == local.admin_url
    assert describe(server).endswith(f"(env TEST_DATABASE_URL {local.admin_url})")


def test_disabled_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_POSTGRES", "off")
    assert find_postgres() is None
    assert describe(None).startswith("SQLite (no PostgreSQL: disabled")
