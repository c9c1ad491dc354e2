"""Creating notifications: one row per event (deduplicated by a key), one recipient row
per subscriber whose chosen events match and who may still read the workflow, and one
pending delivery per matching outbound webhook — all in the caller's transaction.

Fixed from LifeMonitor (contract §8, §12): subscriptions to BUILD_FAILED or
BUILD_RECOVERED alone match (not only ALL); the retention sweep deletes only what is older
than the retention (LifeMonitor's deleted everything daily).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select

from chalicelib.models import (
    Notification,
    Permission,
    RegistryWorkflowVersion,
    Subscription,
    UserNotification,
    WebhookDelivery,
    WebhookEndpoint,
    Workflow,
    WorkflowVersion,
    utcnow,
)
from chalicelib.models.base import new_uuid

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 90


def matches(chosen: list[str] | None, event: str) -> bool:
    """Does a subscription (or webhook) with these events want `event`?"""
    chosen = chosen or ["ALL"]
    return "ALL" in chosen or event in chosen


def _insert_notification(
    session: Session, *, event: str, name: str, data: dict, dedup_key: str | None, now: datetime
) -> int | None:
    """INSERT … ON CONFLICT (dedup_key) DO NOTHING; the new id, or None if it existed."""
    values = {
        "uuid": new_uuid(),
        "event": event,
        "name": name[:2000],
        "data": data,
        "created": now,
        "dedup_key": dedup_key,
    }
    if dedup_key is None:
        return session.execute(
            insert(Notification).values(values).returning(Notification.id)
        ).scalar()
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    stmt = (
        dialect_insert(Notification)
        .values(values)
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        .returning(Notification.id)
    )
    return session.execute(stmt).scalar()


def _readers(session: Session, workflow_id: int) -> tuple[bool, set[int], set[int]]:
    """(public, users owning it, registries that submitted it)."""
    public = bool(session.scalar(select(Workflow.public).where(Workflow.id == workflow_id)))
    owners = set(
        session.scalars(select(Permission.user_id).where(Permission.workflow_id == workflow_id))
    )
    registries = set(
        session.scalars(
            select(RegistryWorkflowVersion.registry_id)
            .join(
                WorkflowVersion, WorkflowVersion.id == RegistryWorkflowVersion.workflow_version_id
            )
            .where(WorkflowVersion.workflow_id == workflow_id)
        )
    )
    return public, owners, registries


def notify(
    session: Session,
    *,
    event: str,
    name: str,
    data: dict[str, Any],
    workflow_id: int,
    workflow_version_id: int | None = None,
    dedup_key: str | None = None,
    now: datetime | None = None,
) -> int | None:
    """Record one event about a workflow for everyone who asked for it; returns the
    notification's id, or None when the same event (`dedup_key`) was recorded before."""
    now = now or utcnow()
    notification_id = _insert_notification(
        session, event=event, name=name, data=data, dedup_key=dedup_key, now=now
    )
    if notification_id is None:
        return None
    public, owners, registries = _readers(session, workflow_id)
    resource = Subscription.workflow_id == workflow_id
    if workflow_version_id is not None:
        resource = resource | (Subscription.workflow_version_id == workflow_version_id)
    users = sorted(
        {
            user_id
            for user_id, events in session.execute(
                select(Subscription.user_id, Subscription.events).where(resource)
            )
            if matches(events, event) and (public or user_id in owners)
        }
    )
    if users:
        session.execute(
            insert(UserNotification),
            [
                {"user_id": u, "notification_id": notification_id, "email_next_attempt_at": now}
                for u in users
            ],
        )
    add_deliveries(session, notification_id, event, workflow_id, public, owners, registries, now)
    log.info("notification %s %r: %d recipient(s)", event, dedup_key or name, len(users))
    return notification_id


def notify_users(
    session: Session,
    user_ids: list[int],
    *,
    event: str,
    name: str,
    data: dict[str, Any],
    dedup_key: str | None = None,
    now: datetime | None = None,
) -> int | None:
    """A notification to named users (e.g. an endpoint's owner), outside subscriptions."""
    now = now or utcnow()
    notification_id = _insert_notification(
        session, event=event, name=name, data=data, dedup_key=dedup_key, now=now
    )
    if notification_id is not None and user_ids:
        session.execute(
            insert(UserNotification),
            [
                {"user_id": u, "notification_id": notification_id, "email_next_attempt_at": now}
                for u in sorted(set(user_ids))
            ],
        )
    return notification_id


def add_deliveries(
    session: Session,
    notification_id: int,
    event: str,
    workflow_id: int,
    public: bool,
    owners: set[int],
    registries: set[int],
    now: datetime,
) -> list[int]:
    """One pending delivery per enabled endpoint that wants this event: endpoints of this
    workflow, and "all my workflows" endpoints of its owners and submitting registries.
    A private workflow's events go only to endpoints whose owner may read it."""
    rows = session.execute(
        select(
            WebhookEndpoint.id,
            WebhookEndpoint.events,
            WebhookEndpoint.workflow_id,
            WebhookEndpoint.user_id,
            WebhookEndpoint.registry_id,
        ).where(
            WebhookEndpoint.enabled.is_(True),
            (WebhookEndpoint.workflow_id == workflow_id) | WebhookEndpoint.workflow_id.is_(None),
        )
    ).all()
    wanted = []
    for endpoint_id, events, wf_id, user_id, registry_id in rows:
        owns = (user_id is not None and user_id in owners) or (
            registry_id is not None and registry_id in registries
        )
        if not matches(events, event):
            continue
        if wf_id is None and not owns:
            continue
        if not (public or owns):
            continue
        wanted.append(endpoint_id)
    if not wanted:
        return []
    ids = list(
        session.scalars(
            insert(WebhookDelivery).returning(WebhookDelivery.id),
            [
                {
                    "uuid": new_uuid(),
                    "endpoint_id": e,
                    "notification_id": notification_id,
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created": now,
                    "modified": now,
                }
                for e in wanted
            ],
        )
    )
    from chalicelib.services import outbound

    outbound.dispatch_after_commit(session, ids)
    return ids


def retention_days() -> int:
    from chalicelib.config import get_settings

    return get_settings().notification_retention_days


def cleanup(session: Session, now: datetime | None = None, days: int | None = None) -> int:
    """Delete notifications older than the retention (default 90 days), and only those;
    returns how many."""
    days = retention_days() if days is None else days
    cutoff = (now or utcnow()) - timedelta(days=days)
    result = session.execute(
        delete(Notification)
        .where(Notification.created < cutoff)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0
