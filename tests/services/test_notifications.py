"""Notifications (issue 11): the API (contract rows 14-17) with LifeMonitor's keys, the
retention sweep (only what is older than the retention), event matching, deduplication."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from chalicelib.models import utcnow
from tests.support import api_data


def notify_users(user_ids, *, event="BUILD_FAILED", created=None, dedup_key=None):
    from chalicelib.db import session_scope
    from chalicelib.services import notifications

    with session_scope() as s:
        return notifications.notify_users(
            s,
            user_ids,
            event=event,
            name=f"TestBuild '1' @ instance 'i' {event}",
            data={"build": {"build_id": "1"}},
            dedup_key=dedup_key,
            now=created,
        )


def listed(client, actor) -> list[dict]:
    r = client.http.get("/users/current/notifications", headers=actor.headers)
    assert r.status_code == 200, r.body
    return r.json_body["items"]


def test_list_mark_read_delete(client, db):
    alice = api_data.make_user("alice")
    bob = api_data.make_user("bob")
    for _ in range(3):
        notify_users([alice.user_id, bob.user_id])
    items = listed(client, alice)
    assert len(items) == 3
    for item in items:
        assert set(item) == {"uuid", "created", "name", "event", "data"}  # unread, not mailed
        assert item["event"] == "BUILD_FAILED" and item["data"] == {"build": {"build_id": "1"}}
    first, second, third = (i["uuid"] for i in items)
    # PUT marks as read ({items: [{uuid}]}); unknown uuids are ignored.
    body = {"items": [{"uuid": first}, {"uuid": "nope"}]}
    r = client.http.put("/users/current/notifications", headers=alice.json(), body=json.dumps(body))
    assert r.status_code == 204
    read = {i["uuid"]: i.get("read") for i in listed(client, alice)}
    assert read[first] and not read[second]
    # PATCH deletes many (a JSON array of uuids), DELETE one; only for the caller.
    r = client.http.patch(
        "/users/current/notifications", headers=alice.json(), body=json.dumps([second])
    )
    assert r.status_code == 204
    r = client.http.delete(f"/users/current/notifications/{third}", headers=alice.headers)
    assert r.status_code == 204
    assert [i["uuid"] for i in listed(client, alice)] == [first]
    assert len(listed(client, bob)) == 3  # bob's copies are untouched
    r = client.http.delete(f"/users/current/notifications/{third}", headers=alice.headers)
    assert r.status_code == 404
    r = client.http.put("/users/current/notifications", headers=alice.json(), body="[]")
    assert r.status_code == 400


def test_dedup_key_makes_one_notification(db):
    from chalicelib.db import session_scope
    from chalicelib.models import Notification

    alice = api_data.make_user("alice")
    assert notify_users([alice.user_id], dedup_key="k1") is not None
    assert notify_users([alice.user_id], dedup_key="k1") is None
    with session_scope() as s:
        assert s.query(Notification).count() == 1


def test_cleanup_deletes_only_what_is_older_than_the_retention(db, monkeypatch):
    """LifeMonitor's cleanup deleted every notification daily (timedelta(days=0))."""
    from chalicelib.db import session_scope
    from chalicelib.jobs import notify
    from chalicelib.models import Notification, UserNotification

    alice = api_data.make_user("alice")
    now = utcnow()
    notify_users([alice.user_id], created=now - timedelta(days=91))
    notify_users([alice.user_id], created=now - timedelta(days=89))
    notify_users([alice.user_id], created=now)
    assert notify.every_hour(now)["cleanup"] == 1
    with session_scope() as s:
        assert s.query(Notification).count() == 2
        assert s.query(UserNotification).count() == 2  # recipients went with it
    monkeypatch.setenv("LM_NOTIFICATION_RETENTION_DAYS", "7")
    assert notify.every_hour(now)["cleanup"] == 1
    assert notify.every_hour(now)["cleanup"] == 0


@pytest.mark.parametrize(
    ("chosen", "event", "expected"),
    [
        (["ALL"], "BUILD_FAILED", True),
        (["BUILD_FAILED"], "BUILD_FAILED", True),  # LifeMonitor matched ALL only
        (["BUILD_FAILED"], "BUILD_RECOVERED", False),
        (["BUILD_RECOVERED", "STALE"], "STALE", True),
        ([], "STALE", True),
    ],
)
def test_matching_honours_the_chosen_events(chosen, event, expected):
    from chalicelib.services.notifications import matches

    assert matches(chosen, event) is expected
