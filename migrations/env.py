"""Alembic environment: the URL and metadata come from the service's own modules, so the
same database the app uses is migrated (locally, in tests, and from the admin Lambda)."""

from alembic import context

from chalicelib.db import get_engine
from chalicelib.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    from chalicelib.db import database_url

    context.configure(
        url=config.get_main_option("sqlalchemy.url") or database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    with get_engine().connect() as connection:
        _run(connection)


def _run(connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables there.
        render_as_batch=sqlite,
        compare_type=True,
    )
    if not sqlite:
        with context.begin_transaction():
            context.run_migrations()
        return
    # A batch rebuild drops and re-creates a table that other rows reference: SQLite's
    # foreign keys must be off meanwhile (the PRAGMA is ignored inside a transaction, so
    # it is set before), and every reference is checked before they are on again.
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        with context.begin_transaction():
            context.run_migrations()
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration left broken foreign keys: {broken[:5]}")
    finally:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
