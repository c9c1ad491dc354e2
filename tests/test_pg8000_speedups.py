"""chalicelib/pg8000_speedups.py: what we change in pg8000 keeps its meaning (results,
errors, transactions) while costing fewer round trips and less parsing."""

from __future__ import annotations

import os
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select, text

from chalicelib import db as dbm
from chalicelib.models import User


@pytest.fixture
def pg(db):
    if not db.startswith("postgresql"):
        pytest.skip("pg8000 behaviour: the suite runs on SQLite (TEST_POSTGRES=sqlite)")
    return db


@contextmanager
def statement_cache(size: int):
    """Engines made meanwhile keep `size` statements per connection. The variable is put
    back *before* the engines are dropped (not by monkeypatch, which undoes it after the
    `db` fixture's teardown has made the next engine)."""
    saved = os.environ.get("LM_DB_STATEMENT_CACHE")
    os.environ["LM_DB_STATEMENT_CACHE"] = str(size)
    dbm.dispose_engines()
    try:
        yield dbm.get_engine()
    finally:
        if saved is None:
            os.environ.pop("LM_DB_STATEMENT_CACHE", None)
        else:
            os.environ["LM_DB_STATEMENT_CACHE"] = saved
        dbm.dispose_engines()


@pytest.fixture
def small_cache(pg):
    """Engines whose connections keep at most two statements."""
    with statement_cache(2) as engine:
        yield engine


def _raw(engine):
    """A pooled connection's pg8000 connection (and the SQLAlchemy one to return)."""
    conn = engine.raw_connection()
    return conn, conn.driver_connection


def _rows(cursor) -> list[list]:
    return [list(r) for r in cursor.fetchall()]


def _prepared(dbapi) -> set[str]:
    cur = dbapi.cursor()
    cur.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE %s", ("lm_%",))
    names = {r[0] for r in cur.fetchall()}
    cur.close()
    return names


def _count_parses(dbapi, monkeypatch) -> list[str]:
    parsed: list[str] = []
    real = type(dbapi).send_PARSE

    def send_parse(self, name, statement, oids=()):
        parsed.append(statement)
        return real(self, name, statement, oids)

    monkeypatch.setattr(type(dbapi), "send_PARSE", send_parse)
    return parsed


def test_placeholder_rewrite_is_cached_and_correct(pg):
    """pg8000's `%s` → `$n` scan is remembered per SQL text; literals that look like
    placeholders, escaped `%%` and quoted text keep their meaning."""
    from pg8000 import dbapi, legacy

    engine = dbm.get_engine()
    assert getattr(legacy.convert_paramstyle, "lm_cached", False)
    sql = 'SELECT %s, \'%%s text\', 5 %% 3, "quoted""%s", $$%s$$ -- %s\n, %s'
    assert legacy.convert_paramstyle("format", sql, (1, 2)) == dbapi.convert_paramstyle(
        "format", sql, (1, 2)
    )
    with engine.connect() as conn:
        for value in ("a", "b"):  # the second call takes the cached text
            row = conn.exec_driver_sql("SELECT %s::text, '100%', 7 %% 4, %s::int", (value, 3)).one()
            assert tuple(row) == (value, "100%", 3, 3)


def test_kept_statements_are_parsed_once(pg, monkeypatch):
    conn, raw = _raw(dbm.get_engine())
    try:
        parsed = _count_parses(raw, monkeypatch)
        cur = raw.cursor()
        rows = []
        for value in (1, 2, 3):
            cur.execute("SELECT %s::int + 1, 'x'", (value,))
            rows.append(_rows(cur))
        assert rows == [[[2, "x"]], [[3, "x"]], [[4, "x"]]]
        assert parsed == ["SELECT $1::int + 1, 'x'"]
        assert len(_prepared(raw)) >= 1
    finally:
        conn.rollback()
        conn.close()


def test_errors_are_raised_and_leave_the_connection_usable(pg):
    from pg8000.exceptions import DatabaseError

    conn, raw = _raw(dbm.get_engine())
    try:
        cur = raw.cursor()
        with pytest.raises(DatabaseError, match="syntax"):
            cur.execute("SELEC %s", (1,))  # the parse fails: nothing is kept
        raw.rollback()
        cur.execute("CREATE TEMP TABLE lm_probe (x int PRIMARY KEY)")
        cur.execute("INSERT INTO lm_probe VALUES (%s)", (1,))
        with pytest.raises(DatabaseError, match="duplicate key"):
            cur.execute("INSERT INTO lm_probe VALUES (%s)", (1,))  # the execute fails
        with pytest.raises(DatabaseError, match="aborted"):
            cur.execute("SELECT x FROM lm_probe WHERE x = %s", (1,))
        raw.rollback()
        cur.execute("SELECT %s::int", (7,))
        assert _rows(cur) == [[7]]
        assert not any(key[0].startswith("SELEC ") for key in raw.lm_statements.entries)
    finally:
        conn.rollback()
        conn.close()


def test_statement_kept_across_a_schema_change_is_replaced(pg):
    """A kept `SELECT *` whose columns change fails once (Postgres refuses the changed
    result type), is dropped, and the next execution prepares it again."""
    from pg8000.exceptions import DatabaseError

    conn, raw = _raw(dbm.get_engine())
    try:
        cur = raw.cursor()
        cur.execute("CREATE TEMP TABLE lm_shape (a int)")
        cur.execute("INSERT INTO lm_shape VALUES (%s)", (1,))
        raw.commit()
        cur.execute("SELECT * FROM lm_shape WHERE a = %s", (1,))
        assert _rows(cur) == [[1]]
        cur.execute("ALTER TABLE lm_shape ADD COLUMN b int DEFAULT 5")
        raw.commit()
        with pytest.raises(DatabaseError, match="result type"):
            cur.execute("SELECT * FROM lm_shape WHERE a = %s", (1,))
        raw.rollback()
        cur.execute("SELECT * FROM lm_shape WHERE a = %s", (1,))
        assert _rows(cur) == [[1, 5]]
    finally:
        conn.rollback()
        conn.close()


def test_least_recently_used_statements_are_closed(small_cache):
    conn, raw = _raw(small_cache)
    try:
        cur = raw.cursor()
        for n in range(5):
            cur.execute(f"SELECT %s::int + {n}", (1,))
            cur.fetchall()
        assert len(raw.lm_statements.entries) == 2
        cur.execute("SELECT %s::int", (1,))  # sends the pending closes
        assert len(_prepared(raw)) <= 3
    finally:
        conn.rollback()
        conn.close()


def test_no_statement_is_kept_when_the_cache_is_off(pg, monkeypatch):
    with statement_cache(0) as engine:
        conn, raw = _raw(engine)
        try:
            parsed = _count_parses(raw, monkeypatch)
            cur = raw.cursor()
            for _ in range(3):
                cur.execute("SELECT %s::int", (1,))
                assert _rows(cur) == [[1]]
            assert len(parsed) == 3  # unnamed: parsed each time, in one round trip
            assert _prepared(raw) == set()
            assert not hasattr(raw, "lm_statements")
        finally:
            conn.rollback()
            conn.close()


def test_orm_round_trip_through_kept_statements(pg):
    """Inserts, reads and rollbacks through the ORM behave as without the speed-ups."""
    for name in ("ada", "grace"):
        with dbm.session_scope() as s:
            s.add(User(username=name))
    with pytest.raises(RuntimeError), dbm.session_scope() as s:
        s.add(User(username="rolled-back"))
        s.flush()
        raise RuntimeError("undo")
    for _ in range(3):
        with dbm.session_scope() as s:
            names = s.scalars(select(User.username).order_by(User.username)).all()
            assert names == ["ada", "grace"]
            assert s.scalar(select(func.count()).select_from(User)) == 2
            assert s.execute(text("SELECT CAST(:v AS text)"), {"v": "kept"}).scalar() == "kept"


def test_read_only_connection_returns_to_the_pool_transactional(pg):
    """The AUTOCOMMIT view is reset on check-in by switching autocommit off (no
    `SET SESSION …` round trips), and the connection has real transactions again."""
    engine = dbm.get_engine()
    token = dbm.read_only.set(True)
    try:
        with dbm.session_scope() as s:
            s.execute(text("SELECT 1"))
            raw = s.connection().connection.dbapi_connection
            assert raw.autocommit is True
    finally:
        dbm.read_only.reset(token)
    assert raw.autocommit is False
    cursor = raw.cursor()
    cursor.execute("SHOW transaction_isolation")
    assert cursor.fetchone()[0] == "read committed"
    cursor.execute("CREATE TEMP TABLE lm_reset_probe (x int)")
    raw.rollback()  # in a transaction again: the table goes with it
    cursor.execute("SELECT to_regclass('pg_temp.lm_reset_probe')")
    assert cursor.fetchone()[0] is None
    raw.rollback()
    assert dbm._autocommit(engine) is dbm._autocommit(engine)


def test_long_statements_are_not_kept(pg, monkeypatch):
    from chalicelib import pg8000_speedups

    conn, raw = _raw(dbm.get_engine())
    try:
        parsed = _count_parses(raw, monkeypatch)
        cur = raw.cursor()
        padding = " " * pg8000_speedups.MAX_KEPT_SQL
        for _ in range(2):
            cur.execute(f"SELECT %s::int{padding}", (1,))
            assert _rows(cur) == [[1]]
        assert len(parsed) == 2  # unnamed each time
        assert not any(
            len(key[0]) > pg8000_speedups.MAX_KEPT_SQL for key in raw.lm_statements.entries
        )
    finally:
        conn.rollback()
        conn.close()


def test_json_columns_are_read_by_orjson_with_json_for_huge_integers(pg):
    engine = dbm.get_engine()
    with engine.connect() as conn:
        small = conn.execute(text("""SELECT '{"a": [1, "é", null]}'::json""")).scalar()
        huge = conn.execute(text("SELECT '[1180591620717411303424]'::json")).scalar()
        doc = conn.execute(text("""SELECT '{"b": 1.5}'::jsonb""")).scalar()
    assert small == {"a": [1, "é", None]}
    assert huge == [2**70]
    assert doc == {"b": 1.5}
