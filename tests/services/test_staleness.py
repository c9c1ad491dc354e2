"""Staleness (issue 11): an instance with no completed build for longer than its threshold
(default 30 days, settable with PUT /instances/{uuid}) becomes STALE, says so in its status
`reason`, and STALE subscribers are told once; a new completed build ends it."""

from __future__ import annotations

import json
from datetime import timedelta

from chalicelib.models import utcnow
from emulators.jenkins import JenkinsEmulator
from tests.support import api_data
from tests.support.notify import jenkins_workflow


def events(client, actor) -> list[str]:
    r = client.http.get("/users/current/notifications", headers=actor.headers)
    return sorted(n["event"] for n in r.json_body["items"])


def test_stale_after_the_threshold_and_notified_once(client, db, monkeypatch):
    from chalicelib.jobs import notify

    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    alice = api_data.make_user("alice")
    bob = api_data.make_user("bob")  # subscribed to BUILD_FAILED only: no STALE for him
    carol = api_data.make_user("carol")
    with JenkinsEmulator() as jenkins:
        wf = jenkins_workflow(client, alice, jenkins, "stale")
        for actor, chosen in ((bob, ["BUILD_FAILED"]), (carol, ["STALE"])):
            r = client.http.put(
                f"/workflows/{wf.uuid}/subscribe", headers=actor.json(), body=json.dumps(chosen)
            )
            assert r.status_code == 201
        wf.step("pass")  # the last completed build: about an hour ago
        now = utcnow()
        assert notify.every_hour(now + timedelta(days=29))["stale"] == 0
        assert notify.every_hour(now + timedelta(days=31))["stale"] == 1
        assert notify.every_hour(now + timedelta(days=32))["stale"] == 0  # once
        assert events(client, alice) == ["STALE"]
        assert events(client, carol) == ["STALE"]
        assert events(client, bob) == []
        status = client.http.get(f"/workflows/{wf.uuid}/status").json_body
        assert status["aggregate_test_status"] == "all_passing"
        assert "STALE" in status["reason"] and "30 days" in status["reason"]
        instance = client.http.get(f"/instances/{wf.instance_uuid}").json_body
        assert instance["stale_since"]
        # A new completed build ends the spell (and the reason).
        wf.step("pass")
        assert "reason" not in client.http.get(f"/workflows/{wf.uuid}/status").json_body
        assert "stale_since" not in client.http.get(f"/instances/{wf.instance_uuid}").json_body


def test_threshold_per_instance(client, db):
    from chalicelib.jobs import notify

    alice = api_data.make_user("alice")
    data = api_data.crate("never-built")
    r = api_data.submit(client, alice, {"rocrate": api_data.b64(data), "version": "1"})
    [instance] = api_data.instance_uuids(r.json_body["uuid"])
    r = client.http.put(
        f"/instances/{instance}", headers=alice.json(), body=json.dumps({"stale_after_days": 2})
    )
    assert r.status_code == 204, r.body
    assert (
        client.http.get(f"/instances/{instance}", headers=alice.headers).json_body[
            "stale_after_days"
        ]
        == 2
    )
    now = utcnow()
    assert notify.every_hour(now + timedelta(days=1))["stale"] == 0
    assert notify.every_hour(now + timedelta(days=3))["stale"] == 1  # no build ever: since created
    for bad in (0, "3", 99999, True):
        r = client.http.put(
            f"/instances/{instance}",
            headers=alice.json(),
            body=json.dumps({"stale_after_days": bad}),
        )
        assert r.status_code == 400, bad
        assert r.json_body["extra_info"]["field"] == "stale_after_days"
    r = client.http.put(
        f"/instances/{instance}", headers=alice.json(), body=json.dumps({"stale_after_days": None})
    )
    assert r.status_code == 204
    body = client.http.get(f"/instances/{instance}", headers=alice.headers).json_body
    assert "stale_after_days" not in body and "stale_since" not in body
