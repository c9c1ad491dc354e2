"""Subscriptions to workflows and the notifications users receive (contract §8, §9).

Fixed from LifeMonitor: event-specific subscriptions match (not only "ALL"), and
subscribing twice is not an error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from chalicelib.auth.principals import Principal
from chalicelib.errors import BadRequestError, ForbiddenError, NotFoundError
from chalicelib.models import EVENTS, Notification, Subscription, User, UserNotification, utcnow
from chalicelib.services import access

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def _user(session: Session, principal: Principal) -> User:
    if principal.user_id is None:
        raise ForbiddenError("Subscriptions belong to users: call with a user's credentials")
    return session.get(User, principal.user_id)


def subscribe(
    session: Session, principal: Principal, wf_uuid: str, events: Any = None
) -> tuple[Subscription, bool]:
    """Returns (subscription, changed)."""
    user = _user(session, principal)
    workflow = access.workflow_for_read(session, principal, wf_uuid)
    if events is not None:
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise BadRequestError(
                "the body must be a JSON array of event names", valid_events=list(EVENTS)
            )
        unknown = sorted(set(events) - set(EVENTS))
        if unknown:
            raise BadRequestError(
                f"unknown event(s): {', '.join(unknown)}", valid_events=list(EVENTS)
            )
        events = sorted(set(events)) or ["ALL"]
    sub = session.scalar(
        select(Subscription).where(
            Subscription.user_id == user.id, Subscription.workflow_id == workflow.id
        )
    )
    if sub is None:
        sub = Subscription(user=user, workflow_id=workflow.id, events=events or ["ALL"])
        session.add(sub)
        session.flush()
        return sub, True
    if events is not None and sorted(sub.events) != events:
        sub.events = events
        sub.modified = utcnow()
        session.flush()
        return sub, True
    return sub, False


def unsubscribe(session: Session, principal: Principal, wf_uuid: str) -> None:
    user = _user(session, principal)
    workflow = access.workflow_for_read(session, principal, wf_uuid)
    session.execute(
        delete(Subscription).where(
            Subscription.user_id == user.id, Subscription.workflow_id == workflow.id
        )
    )


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
