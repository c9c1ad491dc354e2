"""What /health reports: our version and whether the database answers."""

from __future__ import annotations

import logging
import time

from chalicelib import __version__

log = logging.getLogger(__name__)


def check() -> dict:
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from chalicelib.db import get_engine

    started = time.perf_counter()
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        database = "ok"
    except SQLAlchemyError as exc:
        log.warning("health: database unreachable: %s", type(exc).__name__)
        database = "unavailable"
    return {
        "status": "healthy" if database == "ok" else "unhealthy",
        "version": __version__,
        "checks": {
            "database": database,
            "database_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    }
