"""Scheduled notification work: mail and webhook sweeps every minute; staleness and the
retention cleanup (with finished registration jobs past theirs) every hour. Each part runs
on its own: one failing does not stop the others."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)


def _run(name: str, fn: Callable[[], Any], out: dict[str, Any]) -> None:
    try:
        out[name] = fn()
    except Exception as exc:
        log.exception("notify: %s failed", name)
        out[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}


def every_minute(now: datetime | None = None) -> dict[str, Any]:
    from chalicelib.services import email, outbound

    out: dict[str, Any] = {}
    _run("email", lambda: email.send_pending(now), out)
    _run("webhooks", lambda: outbound.deliver_due(now), out)
    return out


def every_hour(now: datetime | None = None) -> dict[str, Any]:
    from chalicelib.db import session_scope
    from chalicelib.services import notifications, staleness

    def stale() -> int:
        with session_scope() as s:
            return len(staleness.check(s, now))

    def cleanup() -> int:
        with session_scope() as s:
            return notifications.cleanup(s, now)

    def jobs() -> int:
        from chalicelib.services import registration_jobs

        registration_jobs.expire_abandoned(now)
        with session_scope() as s:
            return registration_jobs.cleanup(s, now)

    out: dict[str, Any] = {}
    _run("stale", stale, out)
    _run("cleanup", cleanup, out)
    _run("registration_jobs", jobs, out)
    return out


_last_hourly: list[float] = []


def local_tick() -> dict[str, Any]:
    """`make run`'s timer: the minute's work on every tick, the hour's once an hour."""
    import time

    out = every_minute()
    if not _last_hourly or time.monotonic() - _last_hourly[0] >= 3600:
        _last_hourly[:] = [time.monotonic()]
        out.update(every_hour())
    return out
