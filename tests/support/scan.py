"""Credentials must never be stored or logged in clear: scan every table of the database
and the captured log records for any of them."""

from __future__ import annotations

import json


def assert_nowhere_in_clear(secrets: list[str], caplog) -> None:
    from sqlalchemy import select

    from chalicelib.db import get_engine
    from chalicelib.models import Base

    secrets = [s for s in secrets if s and len(s) >= 16]
    assert len(secrets) >= 4
    leaks = []
    with get_engine().connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                text = json.dumps([str(v) for v in row], default=str)
                leaks += [(table.name, s[:6]) for s in secrets if s in text]
    assert not leaks, f"credentials in clear in the database: {leaks}"
    log_text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert caplog.records, "no log line was captured: the scan would prove nothing"
    leaked = [s[:6] for s in secrets if s in log_text]
    assert not leaked, f"credentials in clear in the logs: {leaked}"
