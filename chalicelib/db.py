"""Engine and sessions, created lazily (never at import) and sized for Lambda."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from chalicelib.config import get_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def normalize_url(url: str) -> str:
    """Use pg8000 for every Postgres URL (pure Python: same wheel on x86_64 and arm64)."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+pg8000://" + url[len(prefix) :]
    return url


DATABASE_URL_SECRET = "database/url"  # noqa: S105 - a parameter name, not a secret


def database_url() -> str:
    """DATABASE_URL; else the parameter store's `database/url` (deployed stages: the URL
    holds a password); else the embedded SQLite database under the data dir."""
    settings = get_settings()
    if settings.database_url:
        return normalize_url(settings.database_url)
    if settings.secrets_backend == "ssm":
        from chalicelib.secrets import get_secrets

        url = get_secrets(settings).get(DATABASE_URL_SECRET)
        if url:
            return normalize_url(url)
        if settings.is_deployed:
            raise RuntimeError(
                f"no database configured: set DATABASE_URL or the {settings.ssm_prefix}"
                f"{DATABASE_URL_SECRET} parameter"
            )
    return settings.embedded_database_url


def _create_engine(url: str) -> Engine:
    from sqlalchemy import create_engine, event

    if url.startswith("sqlite"):
        from pathlib import Path

        from sqlalchemy.engine import make_url

        db = make_url(url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    settings = get_settings()
    # Every warm container keeps its pool while frozen: keep it tiny in Lambda (chalice.md
    # §5.2); recycle before RDS/NAT idle timeouts; pre-ping to survive reaped connections.
    engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=0 if settings.in_lambda else 5,
        pool_recycle=300,
        connect_args={"timeout": settings.db_timeout},
    )
    if engine.dialect.driver == "pg8000":
        from chalicelib import pg8000_speedups

        pg8000_speedups.install(engine, statement_cache=settings.db_statement_cache)
    event.listen(engine, "checkin", _stamp_checkin)
    event.listen(engine, "checkout", _ping_if_idle)
    return engine


# A connection idle this long may have died (a frozen Lambda, a NAT timeout): test it
# before use. A busy one is not pinged — `pool_pre_ping` would cost a round trip on every
# request.
IDLE_PING_AFTER = 30.0


def _stamp_checkin(_dbapi_conn, record) -> None:
    import time

    record.info["lm_checkin"] = time.monotonic()


def _ping_if_idle(dbapi_conn, record, _proxy) -> None:
    import time

    from sqlalchemy import exc

    last = record.info.get("lm_checkin")
    if last is None or time.monotonic() - last < IDLE_PING_AFTER:
        return
    try:
        cursor = dbapi_conn.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
    except Exception as error:
        # The pool discards this connection and tries another (or a new one).
        raise exc.DisconnectionError() from error


def get_engine() -> Engine:
    url = database_url()
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _create_engine(url)
    return engine


def get_sessionmaker():
    from sqlalchemy.orm import sessionmaker

    return sessionmaker(bind=get_engine(), expire_on_commit=False, future=True)


_autocommit_engines: dict[Engine, Engine] = {}


def _autocommit(engine: Engine) -> Engine:
    """The engine's AUTOCOMMIT view, made once (building one costs ~0.1 ms a request)."""
    view = _autocommit_engines.get(engine)
    if view is None:
        view = _autocommit_engines[engine] = engine.execution_options(isolation_level="AUTOCOMMIT")
    return view


#: Set by the API for requests that only read (GET): their sessions skip BEGIN/COMMIT.
read_only: contextvars.ContextVar[bool] = contextvars.ContextVar("read_only", default=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error, always close.

    In a read-only request the session runs in autocommit mode instead: each statement sees
    committed data on its own (our reads are single statements per level, and the refresh
    writes a build and its instance's pointers in one transaction), and two of the round
    trips of a short read — BEGIN and COMMIT — are saved."""
    if read_only.get():
        from sqlalchemy.orm import Session as _Session

        session = _Session(bind=_autocommit(get_engine()), expire_on_commit=False)
        try:
            yield session
        finally:
            session.close()
        return
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException as exc:
        session.rollback()
        conflict = conflict_error(exc)
        if conflict is not None:
            raise conflict from exc
        raise
    finally:
        session.close()


# SQLSTATEs of a lost race: unique and foreign-key violations (the other request created or
# deleted the row first), serialization failures and deadlocks (Postgres aborted one side).
_CONFLICT_STATES = {"23505", "23503", "40001", "40P01"}


def conflict_error(exc: BaseException):
    """The 409 for a transaction that lost a race with a concurrent one, else None: the
    database's constraints decide, and every writer gets the same answer from here."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.orm.exc import StaleDataError

    from chalicelib.errors import ConflictError

    if isinstance(exc, StaleDataError):
        return ConflictError("The resource was changed or deleted by a concurrent request")
    if not isinstance(exc, DBAPIError):
        return None
    orig = exc.orig
    info = orig.args[0] if orig is not None and orig.args else None
    code = info.get("C") if isinstance(info, dict) else None  # pg8000's error fields
    text = str(orig).lower()
    sqlite_unique = "unique constraint failed" in text or "foreign key constraint failed" in text
    if code in _CONFLICT_STATES or (code is None and sqlite_unique):
        return ConflictError(
            "The request conflicts with a concurrent change; the resource already exists "
            "or no longer does"
        )
    return None


def dispose_engines() -> None:
    """Close every pool (tests, and admin commands before exiting)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _autocommit_engines.clear()
