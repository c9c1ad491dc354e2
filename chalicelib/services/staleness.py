"""Staleness (Healthchecks-style): a test instance that has had no completed build for
longer than its threshold — `stale_after_days`, default ``LM_STALE_AFTER_DAYS`` (30) —
becomes STALE: `stale_since` is set, its status `reason` says so, and subscribers of STALE
(or ALL) are notified once per stale spell. A new completed build ends the spell
(services/transitions.py clears `stale_since`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update

from chalicelib.models import Build, TestInstance, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

STALE = "STALE"


def default_days() -> int:
    from chalicelib.config import get_settings

    return get_settings().stale_after_days


def check(session: Session, now: datetime | None = None) -> list[int]:
    """Mark the instances that became stale and notify; returns their ids."""
    now = now or utcnow()
    default = default_days()
    # The newest completed build the transition detector saw (else the status pointer).
    last = func.coalesce(TestInstance.transition_build_id, TestInstance.last_completed_build_id)
    rows = session.execute(
        select(
            TestInstance.id,
            TestInstance.stale_after_days,
            TestInstance.created,
            Build.id,
            func.coalesce(Build.finished_at, Build.started_at, Build.created),
        )
        .outerjoin(Build, Build.id == last)
        .where(TestInstance.stale_since.is_(None), TestInstance.managed.is_(False))
    ).all()
    stale = []
    for instance_id, days, created, build_id, completed_at in rows:
        since = completed_at or created
        if since is not None and now - since > timedelta(days=days or default):
            stale.append((instance_id, build_id, days or default))
    for instance_id, build_id, days in stale:
        _mark(session, instance_id, build_id, days, now)
    return [i for i, _, _ in stale]


def _mark(session: Session, instance_id: int, build_id: int | None, days: int, now: datetime):
    from chalicelib.services import notifications, transitions

    changed = session.execute(
        update(TestInstance)
        .where(TestInstance.id == instance_id, TestInstance.stale_since.is_(None))
        .values(stale_since=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not changed:  # another sweep got there first
        return
    context = transitions._context(session, instance_id)
    instance = context["instance"]
    last_build = session.get(Build, build_id) if build_id is not None else None
    data = {
        "instance": transitions.instance_body(instance, context["service"]),
        "workflow": {
            "uuid": context["workflow"].uuid,
            "name": context["workflow"].name,
            "version": context["version"].version,
        },
        "suite": {"uuid": context["suite"].uuid, "name": context["suite"].name},
        "stale_after_days": days,
        "stale_since": now.isoformat(),
        "last_completed_build": transitions.build_body(last_build, context) if last_build else None,
    }
    notifications.notify(
        session,
        event=STALE,
        name=f"Instance '{instance.uuid}' STALE: no completed build for over {days} days",
        data=data,
        workflow_id=context["workflow"].id,
        workflow_version_id=context["version"].id,
        # Once per spell: the same last build cannot make it stale twice.
        dedup_key=f"{STALE}:{instance.uuid}:{build_id if build_id is not None else 'none'}",
        now=now,
    )
