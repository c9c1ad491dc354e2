"""Subscriptions (issues 9 and 11): one row per user and workflow under concurrent
subscribes; mixed subscribe/unsubscribe/PUT bursts never fail; unsubscribe always works;
the STALE event; the submitter is subscribed on registration."""

from __future__ import annotations

import json
import threading

import pytest

from tests.support import api_data

BURST = 16


@pytest.fixture
def postgres(db):
    from chalicelib.db import get_engine

    if get_engine().dialect.name != "postgresql":
        pytest.skip("concurrency bursts are checked on PostgreSQL")


@pytest.fixture
def workflow(client):
    alice = api_data.make_user("alice")
    data = api_data.crate()
    r = api_data.submit(
        client, alice, {"rocrate": api_data.b64(data), "version": "1", "public": True}
    )
    assert r.status_code == 201, r.body
    return alice, r.json_body["uuid"]


def principal_of(actor):
    from chalicelib.auth import scopes as S
    from chalicelib.auth.principals import Principal

    return Principal(
        method="api_key", user_id=actor.user_id, username=actor.name, scopes=S.USER_API_KEY
    )


def rows(user_id: int) -> list[tuple]:
    from chalicelib.db import session_scope
    from chalicelib.models import Subscription

    with session_scope() as s:
        return [
            (r.workflow_id, sorted(r.events))
            for r in s.query(Subscription).filter_by(user_id=user_id)
        ]


def burst(n: int, action) -> list[BaseException | object]:
    """Run `action(i)` in n threads released together; returns results or exceptions."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = action(i)
        except BaseException as exc:  # collected and asserted on
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_subscribes_leave_one_row(postgres, workflow):
    from chalicelib.db import session_scope
    from chalicelib.services import subscriptions

    _, wf = workflow
    bob = api_data.make_user("bob")
    principal = principal_of(bob)

    def subscribe(i: int):
        with session_scope() as s:
            return subscriptions.subscribe(s, principal, wf, None)[1]

    results = burst(BURST, subscribe)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert results.count(True) == 1  # one created it; the others found it
    assert rows(bob.user_id) and len(rows(bob.user_id)) == 1


def test_mixed_subscribe_unsubscribe_put_bursts_never_fail(postgres, workflow):
    from chalicelib.db import session_scope
    from chalicelib.services import subscriptions

    _, wf = workflow
    bob = api_data.make_user("bob")
    principal = principal_of(bob)
    choices = [["ALL"], ["BUILD_FAILED"], ["BUILD_RECOVERED", "STALE"]]

    def act(i: int):
        with session_scope() as s:
            kind = i % 3
            if kind == 0:
                return subscriptions.subscribe(s, principal, wf, None)[1]
            if kind == 1:
                return subscriptions.subscribe(s, principal, wf, choices[i % len(choices)])[1]
            return subscriptions.unsubscribe(s, principal, wf)

    for _ in range(3):
        results = burst(BURST, act)
        assert not [r for r in results if isinstance(r, BaseException)], results
        assert len(rows(bob.user_id)) <= 1


def test_api_burst_answers_2xx(postgres, client, workflow):
    """The same through the API handlers (one test client per thread is not safe, so the
    handlers run through the services as the routes do; this checks the routes' codes)."""
    _, wf = workflow
    bob = api_data.make_user("bob")
    for _ in range(2):
        r = client.http.post(f"/workflows/{wf}/subscribe", headers=bob.json())
        assert r.status_code in (200, 201), r.body
    r = client.http.put(f"/workflows/{wf}/subscribe", headers=bob.json(), body='["STALE"]')
    assert r.status_code == 201 and r.json_body["events"] == ["STALE"]
    r = client.http.put(f"/workflows/{wf}/subscribe", headers=bob.json(), body='["STALE"]')
    assert r.status_code == 200
    assert rows(bob.user_id)[0][1] == ["STALE"]
    r = client.http.put(f"/workflows/{wf}/subscribe", headers=bob.json(), body='["NOPE"]')
    assert r.status_code == 400 and "STALE" in r.json_body["extra_info"]["valid_events"]


def test_submitter_is_subscribed_to_all(client, workflow):
    alice, wf = workflow
    r = client.http.get("/users/current/subscriptions", headers=alice.headers)
    assert [(s["resource"]["uuid"], s["events"]) for s in r.json_body["items"]] == [(wf, ["ALL"])]


def test_unsubscribe_works_after_the_workflow_was_made_private(client, workflow):
    """Issue 9 defect 8: a subscriber of a public workflow made private could not
    unsubscribe (403)."""
    alice, wf = workflow
    bob = api_data.make_user("bob")
    assert client.http.post(f"/workflows/{wf}/subscribe", headers=bob.json()).status_code == 201
    r = client.http.put(
        f"/workflows/{wf}", headers=alice.json(), body=json.dumps({"public": False})
    )
    assert r.status_code in (201, 204), r.body
    r = client.http.put(
        f"/workflows/{wf}", headers=alice.json(), body=json.dumps({"public": False})
    )
    assert client.http.get(f"/workflows/{wf}", headers=bob.headers).status_code == 403
    r = client.http.post(f"/workflows/{wf}/unsubscribe", headers=bob.json())
    assert r.status_code == 204, r.body
    assert rows(bob.user_id) == []
    # Without a subscription, a private workflow stays out of reach (403), a missing one 404.
    assert client.http.post(f"/workflows/{wf}/unsubscribe", headers=bob.json()).status_code == 403
    r = client.http.post(
        "/workflows/00000000-0000-0000-0000-000000000000/unsubscribe", headers=bob.json()
    )
    assert r.status_code == 404
