"""Subscriptions to workflows and the notifications users receive (contract §8, §9).

Fixed from LifeMonitor: event-specific subscriptions match (not only "ALL"), and
subscribing twice is not an error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update

from chalicelib.auth.principals import Principal
from chalicelib.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError
from chalicelib.models import (
    EVENTS,
    Notification,
    Subscription,
    User,
    UserNotification,
    Workflow,
    utcnow,
)
from chalicelib.services import access

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def _user(session: Session, principal: Principal) -> User:
    if principal.user_id is None:
        raise ForbiddenError("Subscriptions belong to users: call with a user's credentials")
    return session.get(User, principal.user_id)


def _insert(session: Session, values: dict[str, Any]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING on the (user, workflow) partial unique index;
    True when a row was added. Concurrent subscribes end in one row, never an error."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    now = utcnow()
    stmt = (
        insert(Subscription)
        .values(created=now, modified=now, **values)
        .on_conflict_do_nothing(
            index_elements=["user_id", "workflow_id"],
            index_where=Subscription.workflow_id.is_not(None),
        )
        .returning(Subscription.id)
    )
    return session.execute(stmt).first() is not None


def ensure_subscribed(session: Session, user_id: int, workflow_id: int) -> bool:
    """Subscribe a user to every event of a workflow unless subscribed already (the
    submitter, on registration); True when a subscription was added."""
    return _insert(session, {"user_id": user_id, "workflow_id": workflow_id, "events": ["ALL"]})


def validate_events(events: Any) -> list[str]:
    """A JSON array of known event names, sorted and unique; [] means ["ALL"]."""
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise BadRequestError(
            "the body must be a JSON array of event names", valid_events=list(EVENTS)
        )
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:
        raise BadRequestError(
            f"unknown event(s): {', '.join(e[:64] for e in unknown[:10])}",
            valid_events=list(EVENTS),
        )
    return sorted(set(events)) or ["ALL"]


def subscribe(
    session: Session, principal: Principal, wf_uuid: str, events: Any = None
) -> tuple[Subscription, bool]:
    """Subscribe the caller to a workflow (POST: every event, or keep the events chosen;
    PUT: exactly `events`). Returns (subscription, changed).

    Race-safe on PostgreSQL: the row is upserted, and changed under its row lock with
    plain statements — a concurrent unsubscribe can only make the update find no row (we
    insert again), never fail a flush (LifeMonitor's StaleDataError)."""
    user = _user(session, principal)
    workflow = access.workflow_for_read(session, principal, wf_uuid)
    if events is not None:
        events = validate_events(events)
    key = (Subscription.user_id == user.id, Subscription.workflow_id == workflow.id)
    changed = False
    for _ in range(3):
        if _insert(
            session, {"user_id": user.id, "workflow_id": workflow.id, "events": events or ["ALL"]}
        ):
            changed = True
            break
        if events is None:
            break
        query = select(Subscription.id, Subscription.events).where(*key)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        row = session.execute(query).first()
        if row is None:
            continue  # unsubscribed meanwhile: insert again
        if sorted(row.events or []) != events:
            session.execute(
                update(Subscription)
                .where(Subscription.id == row.id)
                .values(events=events, modified=utcnow())
                .execution_options(synchronize_session=False)
            )
            changed = True
        break
    sub = session.scalar(select(Subscription).where(*key).execution_options(populate_existing=True))
    if sub is None:  # pragma: no cover - three concurrent unsubscribes in a row
        raise ConflictError("the subscription changed concurrently; try again")
    return sub, changed


def unsubscribe(session: Session, principal: Principal, wf_uuid: str) -> None:
    """Remove the caller's subscription. Always possible for a subscriber, even when the
    workflow is no longer visible to them (made private since): only a caller with no
    subscription gets the read check's 403."""
    user = _user(session, principal)
    workflow = session.scalar(select(Workflow).where(Workflow.uuid == wf_uuid))
    if workflow is None:
        raise NotFoundError(
            f"Workflow '{wf_uuid}' not found", resource_type="workflow", resource_identifier=wf_uuid
        )
    deleted = session.execute(
        delete(Subscription)
        .where(Subscription.user_id == user.id, Subscription.workflow_id == workflow.id)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not deleted:
        access.check_read(session, principal, workflow)


def list_subscriptions(session: Session, principal: Principal) -> list[Subscription]:
    user = _user(session, principal)
    return list(
        session.scalars(
            select(Subscription).where(Subscription.user_id == user.id).order_by(Subscription.id)
        )
    )


def list_notifications(session: Session, principal: Principal):
    user = _user(session, principal)
    return session.execute(
        select(UserNotification, Notification)
        .join(Notification, UserNotification.notification_id == Notification.id)
        .where(UserNotification.user_id == user.id)
        .order_by(Notification.created.desc())
    ).all()


def _uuids(items: Any, *, wrapped: bool) -> list[str]:
    if wrapped:
        if not isinstance(items, dict) or not isinstance(items.get("items"), list):
            raise BadRequestError('the body must be {"items": [{"uuid": ...}, ...]}')
        items = items["items"]
        if not all(isinstance(i, dict) and isinstance(i.get("uuid"), str) for i in items):
            raise BadRequestError('each item must be {"uuid": "<notification uuid>"}')
        return [i["uuid"] for i in items]
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise BadRequestError("the body must be a JSON array of notification uuids")
    return items


def mark_read(session: Session, principal: Principal, body: Any) -> int:
    user = _user(session, principal)
    uuids = _uuids(body, wrapped=True)
    rows = session.scalars(
        select(UserNotification)
        .join(Notification)
        .where(UserNotification.user_id == user.id, Notification.uuid.in_(uuids))
    )
    count = 0
    for row in rows:
        if row.read_at is None:
            row.read_at = utcnow()
        count += 1
    return count


def delete_notifications(session: Session, principal: Principal, body: Any) -> int:
    user = _user(session, principal)
    uuids = _uuids(body, wrapped=False)
    ids = list(session.scalars(select(Notification.id).where(Notification.uuid.in_(uuids))))
    if not ids:
        return 0
    result = session.execute(
        delete(UserNotification).where(
            UserNotification.user_id == user.id, UserNotification.notification_id.in_(ids)
        )
    )
    return result.rowcount or 0


def delete_notification(session: Session, principal: Principal, uuid: str) -> None:
    if delete_notifications(session, principal, [uuid]) == 0:
        raise NotFoundError(f"Notification '{uuid}' not found", resource_type="notification")
