"""Tests for the PostgreSQL finder (devtools/postgres.py)."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import sqlalchemy
from sqlalchemy.pool import NullPool

from devtools import postgres
from devtools.postgres import (
    PostgresServer,
    PostgresUnavailable,
    _pid_alive,
    _postmaster_pid,
    describe,
    find_pg_bin,
    find_postgres,
    normalize_url,
    wanted,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _skip_unless_ci(reason: str) -> None:
    # A machine without PostgreSQL may skip these; CI must have it.
    if IN_CI:
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


def _unused_port():
    """A port with nothing listening: bound (so nothing else takes it) but not listening,
    so a connection is refused at once. Close the socket when done."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


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
    monkeypatch.delenv("TEST_POSTGRES_PORT", raising=False)
    try:
        server = find_postgres(prefer="local")
    except PostgresUnavailable as exc:
        _skip_unless_ci(f"no local PostgreSQL on 127.0.0.1:5432: {exc}")
    assert server is not None and server.kind == "local"
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
def test_throwaway_cluster_lifecycle() -> None:
    # Starts initdb/pg_ctl as the postgres OS user when run as root, on a free port.
    if find_pg_bin() is None:
        _skip_unless_ci("initdb/pg_ctl not installed")
    started = time.monotonic()
    server = find_postgres(prefer="throwaway")
    elapsed = time.monotonic() - started
    assert server is not None, describe(None)
    print(f"throwaway cluster started in {elapsed:.2f}s: {describe(server)}")
    try:
        assert server.kind == "throwaway"
        assert server.host == "127.0.0.1" and server.port != 5432
        assert server.base_dir and server.data_dir
        if os.geteuid() == 0:  # postgres refuses root: the cluster belongs to postgres
            import pwd

            owner = pwd.getpwuid(os.stat(server.data_dir).st_uid).pw_name
            assert owner == "postgres"
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


def test_env_url_unreachable_raises_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # Port 1 on localhost refuses connections immediately.
    monkeypatch.setenv("TEST_DATABASE_URL", "postgres://nobody@127.0.0.1:1/x")
    with pytest.raises(PostgresUnavailable) as caught:
        find_postgres(prefer="env")
    message = str(caught.value)
    assert "\n" not in message
    assert "env: postgresql+pg8000://nobody@127.0.0.1:1/x" in message
    assert "TEST_POSTGRES=sqlite" in message  # says how to run on SQLite on purpose


def test_local_port_is_overridable(monkeypatch: pytest.MonkeyPatch) -> None:
    sock, port = _unused_port()
    try:
        monkeypatch.setenv("TEST_POSTGRES_PORT", str(port))
        with pytest.raises(PostgresUnavailable, match=f"local: .*@127.0.0.1:{port}: ") as caught:
            find_postgres(prefer="local")
    finally:
        sock.close()
    assert "\n" not in str(caught.value)
    monkeypatch.setenv("TEST_POSTGRES_PORT", "54x")
    with pytest.raises(ValueError, match="TEST_POSTGRES_PORT"):
        find_postgres(prefer="local")


def _nothing_anywhere(monkeypatch: pytest.MonkeyPatch):
    sock, port = _unused_port()
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    monkeypatch.delenv("TEST_POSTGRES", raising=False)
    monkeypatch.setenv("TEST_POSTGRES_PORT", str(port))
    monkeypatch.setattr(
        postgres, "_throwaway", lambda: postgres.last_attempts.append("throwaway: no initdb")
    )
    return sock


def test_auto_outside_ci_falls_back_to_sqlite_and_says_why(monkeypatch) -> None:
    sock = _nothing_anywhere(monkeypatch)
    monkeypatch.delenv("CI", raising=False)
    try:
        assert find_postgres() is None
    finally:
        sock.close()
    header = describe(None)
    assert header.startswith("SQLite (no PostgreSQL could be had: env: ")
    assert "throwaway: no initdb" in header


def test_auto_never_falls_back_to_sqlite_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing anywhere: no URL, nothing on the local port, no throwaway cluster.
    monkeypatch.setenv("CI", "true")
    sock, port = _unused_port()
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    monkeypatch.delenv("TEST_POSTGRES", raising=False)
    monkeypatch.setenv("TEST_POSTGRES_PORT", str(port))

    def no_cluster():
        postgres.last_attempts.append("throwaway: initdb/pg_ctl not found")

    monkeypatch.setattr(postgres, "_throwaway", no_cluster)
    try:
        with pytest.raises(PostgresUnavailable) as caught:
            find_postgres()
    finally:
        sock.close()
    message = str(caught.value)
    assert message.startswith("no PostgreSQL server (TEST_POSTGRES=auto): env: ")
    assert "; local: " in message and f":{port}: " in message
    assert "; throwaway: initdb/pg_ctl not found. " in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("value", "choice"),
    [
        ("", "auto"),
        ("auto", "auto"),
        ("LOCAL", "local"),
        ("env", "env"),
        ("throwaway", "throwaway"),
        ("sqlite", "sqlite"),
        ("off", "sqlite"),
        ("none", "sqlite"),
    ],
)
def test_wanted(monkeypatch: pytest.MonkeyPatch, value: str, choice: str) -> None:
    monkeypatch.setenv("TEST_POSTGRES", value)
    assert wanted() == choice


def test_unknown_choice_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_POSTGRES", "postgress")
    with pytest.raises(ValueError, match="TEST_POSTGRES='postgress'"):
        find_postgres()


def test_env_url_is_used_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_POSTGRES", raising=False)
    monkeypatch.delenv("TEST_POSTGRES_PORT", raising=False)
    try:
        local = find_postgres(prefer="local")
    except PostgresUnavailable:
        _skip_unless_ci("needs the local server to point TEST_DATABASE_URL at")
    plain = local.admin_url.replace("postgresql+pg8000://", "postgresql://")
    monkeypatch.setenv("TEST_DATABASE_URL", plain)
    server = find_postgres()
    assert server is not None and server.kind == "env"
    assert server.admin_url == local.admin_url
    assert describe(server).endswith(f"(env TEST_DATABASE_URL {local.admin_url})")


@pytest.mark.parametrize("value", ["sqlite", "off"])
def test_sqlite_only_when_asked_for(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TEST_POSTGRES", value)
    assert find_postgres() is None
    assert describe(None) == (
        "SQLite (SQLite asked for by TEST_POSTGRES): PostgreSQL-only tests are skipped"
    )
