"""Run the Alembic migrations of `migrations/` from code (admin commands, tests, Lambda).

Chalice zips only `app.py`, `chalicelib/` and `vendor/`. `make package` links
`vendor/migrations -> ../migrations`, and the packager copies vendor contents to the zip
root, so in Lambda the scripts sit at `/var/task/migrations` — the same place relative to
`chalicelib/` as in the repository (or under the layer's site-packages with
`automatic_layer`). `locate_scripts()` looks in each of those places.
"""

from __future__ import annotations

import sys
from pathlib import Path

from chalicelib.config import PROJECT_ROOT


class MigrationError(RuntimeError):
    pass


def locate_scripts() -> Path:
    from chalicelib.config import get_settings

    candidates = []
    if get_settings().migrations_dir is not None:
        candidates.append(get_settings().migrations_dir)
    candidates.append(PROJECT_ROOT / "migrations")
    candidates += [Path(p) / "migrations" for p in sys.path if p]
    for path in candidates:
        if (path / "env.py").is_file() and (path / "versions").is_dir():
            return path.resolve()
    raise MigrationError(
        "migration scripts not found (looked in: "
        + ", ".join(str(c) for c in candidates[:3])
        + "); package with `make package`, which vendors migrations/"
    )


def alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(locate_scripts()))
    return cfg


def _script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    heads = _script().get_heads()
    if len(heads) != 1:
        raise MigrationError(f"expected one migration head, found {heads}")
    return heads[0]


def current() -> str | None:
    """The database's revision, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    from chalicelib.db import get_engine

    with get_engine().connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def describe_current() -> str:
    rev = current()
    if rev is None:
        return "(empty database: no migration applied)"
    return f"{rev} (head)" if rev == head() else rev


def upgrade(revision: str = "head") -> str | None:
    from alembic import command

    command.upgrade(alembic_config(), revision)
    return current()


def downgrade(revision: str) -> str | None:
    from alembic import command
    from alembic.util import CommandError

    if not revision:
        raise MigrationError("downgrade needs a revision (e.g. -1, base or 0001)")
    try:
        command.downgrade(alembic_config(), revision)
    except CommandError as exc:
        raise MigrationError(str(exc)) from None
    return current()


def known_revision(revision: str) -> bool:
    from alembic.util import CommandError

    if revision in {"head", "base"} or revision.startswith(("-", "+")):
        return True
    try:
        return _script().get_revision(revision) is not None
    except CommandError:
        return False
