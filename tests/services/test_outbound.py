"""Outbound webhooks (issue 11): a receiver on loopback gets one signed CloudEvent per
transition, verified with the published Standard Webhooks algorithm (the
`standardwebhooks` package and an independent HMAC check), gets retries after answering
500, and an endpoint that keeps failing is disabled with a notification to its owner."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta

import pytest

from chalicelib.models import utcnow
from emulators.jenkins import JenkinsEmulator
from emulators.receiver import WebhookReceiver
from tests.support import api_data
from tests.support.notify import jenkins_workflow


@pytest.fixture
def loopback(monkeypatch):
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")  # the receiver and the CI are on loopback


@pytest.fixture
def jenkins():
    with JenkinsEmulator() as j:
        yield j


@pytest.fixture
def receiver():
    with WebhookReceiver() as r:
        yield r


def register(client, actor, url: str, **fields) -> dict:
    r = client.http.post(
        "/webhook-endpoints", headers=actor.json(), body=json.dumps({"url": url, **fields})
    )
    assert r.status_code == 201, r.body
    return r.json_body


def independent_check(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks signature, computed here from the spec, not from our code."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(part == f"v1,{expected}" for part in headers["webhook-signature"].split(" "))


def test_one_signed_cloudevent_per_transition(client, loopback, jenkins, receiver):
    from standardwebhooks.webhooks import Webhook

    alice = api_data.make_user("alice")
    wf = jenkins_workflow(client, alice, jenkins, "hooked")
    endpoint = register(client, alice, receiver.hook_url(), workflow=wf.uuid)
    assert endpoint["secret"].startswith("whsec_")
    assert endpoint["workflow"] == wf.uuid and endpoint["enabled"] is True
    # The secret is shown once: never listed again.
    listed = client.http.get("/webhook-endpoints", headers=alice.headers).json_body["items"]
    assert [e["uuid"] for e in listed] == [endpoint["uuid"]] and "secret" not in listed[0]

    for outcome in ("pass", "fail", "fail", "pass"):
        wf.step(outcome)
    posts = receiver.posts()
    assert len(posts) == 2
    verifier = Webhook(endpoint["secret"])
    events = []
    for post in posts:
        assert post.headers["content-type"] == "application/cloudevents+json"
        event = verifier.verify(post.body, post.headers)  # raises on a bad signature
        assert independent_check(endpoint["secret"], post.headers, post.body)
        assert event["specversion"] == "1.0" and event["id"] == post.headers["webhook-id"]
        assert event["source"] == f"http://lm.test/workflows/{wf.uuid}"
        assert event["subject"] == f"instances/{wf.instance_uuid}"
        events.append((event["type"], event["data"]["build"]["build_id"]))
    assert events == [("eu.lifemonitor.build_failed", "2"), ("eu.lifemonitor.build_recovered", "4")]
    # A tampered body fails the published check.
    from standardwebhooks.webhooks import WebhookVerificationError

    with pytest.raises(WebhookVerificationError):
        verifier.verify(posts[0].body.replace(b"failed", b"passed"), posts[0].headers)


def test_retries_after_500_with_back_off(client, loopback, jenkins, receiver):
    from chalicelib.db import session_scope
    from chalicelib.models import WebhookDelivery
    from chalicelib.services import outbound

    alice = api_data.make_user("alice")
    wf = jenkins_workflow(client, alice, jenkins, "flaky")
    register(client, alice, receiver.hook_url("/flaky"))  # all of alice's workflows
    receiver.fault("^/flaky$", status=500, times=2)
    wf.step("pass")
    wf.step("fail")  # first attempt, inline after the commit: 500
    assert len(receiver.posts("/flaky")) == 1
    with session_scope() as s:
        [d] = s.query(WebhookDelivery).all()
        assert (d.state, d.attempts, d.last_status) == ("pending", 1, 500)
        due = d.next_attempt_at
    assert due - utcnow() > timedelta(seconds=20)  # back-off, not at once
    assert outbound.deliver_due() == {"claimed": 0, "sent": 0}  # not due yet
    assert outbound.deliver_due(due + timedelta(seconds=1)) == {"claimed": 1, "sent": 1}  # 500
    with session_scope() as s:
        second = s.query(WebhookDelivery).one().next_attempt_at
    assert second - due > timedelta(seconds=50)  # the wait doubled
    outbound.deliver_due(second + timedelta(seconds=1))  # 204
    posts = receiver.posts("/flaky")
    assert len(posts) == 3
    assert len({p.headers["webhook-id"] for p in posts}) == 1  # same id on every retry
    with session_scope() as s:
        d = s.query(WebhookDelivery).one()
        assert (d.state, d.attempts, d.last_status) == ("delivered", 3, 204)
    assert outbound.deliver_due(second + timedelta(hours=5)) == {"claimed": 0, "sent": 0}


def test_endpoint_disabled_after_repeated_failures(
    client, loopback, jenkins, receiver, monkeypatch
):
    from chalicelib.services import outbound

    monkeypatch.setenv("LM_WEBHOOK_DISABLE_AFTER", "3")
    alice = api_data.make_user("alice")
    wf = jenkins_workflow(client, alice, jenkins, "broken")
    endpoint = register(client, alice, receiver.hook_url("/down"), workflow=wf.uuid)
    receiver.fault("^/down$", status=500)
    wf.step("pass")
    wf.step("fail")
    later = utcnow()
    for _ in range(4):
        later += timedelta(hours=3)
        outbound.deliver_due(later)
    assert len(receiver.posts("/down")) == 3
    body = client.http.get(
        f"/webhook-endpoints/{endpoint['uuid']}", headers=alice.headers
    ).json_body
    assert body["enabled"] is False and "3 failed attempts" in body["disabled_reason"]
    notes = client.http.get("/users/current/notifications", headers=alice.headers).json_body
    assert "WEBHOOK_DISABLED" in [n["event"] for n in notes["items"]]
    # Re-enabled by its owner: delivered again from the next transition on.
    receiver.clear_faults()
    r = client.http.patch(
        f"/webhook-endpoints/{endpoint['uuid']}", headers=alice.json(), body='{"enabled": true}'
    )
    assert r.status_code == 200 and r.json_body["consecutive_failures"] == 0
    wf.step("pass")
    assert receiver.posts("/down")[-1].headers.get("webhook-signature")


def test_slack_target_gets_a_readable_message(client, loopback, jenkins, receiver):
    alice = api_data.make_user("alice")
    wf = jenkins_workflow(client, alice, jenkins, "slacky")
    register(client, alice, receiver.hook_url("/slack"), format="slack", events=["BUILD_FAILED"])
    for outcome in ("pass", "fail", "pass"):
        wf.step(outcome)
    [post] = receiver.posts("/slack")  # BUILD_FAILED only, as chosen
    message = post.json()
    assert "is failing" in message["text"] and "sort-and-change-case" in message["text"]
    assert message["blocks"][0]["text"]["type"] == "mrkdwn"
    assert f"http://lm.test/workflows/{wf.uuid}/status" in message["blocks"][0]["text"]["text"]


def test_queued_through_sqs_and_retried_with_a_delay(
    client, loopback, jenkins, receiver, monkeypatch
):
    from moto import mock_aws

    from chalicelib.services import outbound

    with mock_aws():
        import boto3

        sqs = boto3.client("sqs", region_name="eu-west-1")
        queue = sqs.create_queue(QueueName="lifemonitor-webhooks-test")["QueueUrl"]
        monkeypatch.setenv("LM_WEBHOOK_QUEUE_URL", queue)
        alice = api_data.make_user("alice")
        wf = jenkins_workflow(client, alice, jenkins, "queued")
        register(client, alice, receiver.hook_url("/q"))
        receiver.fault("^/q$", status=500, times=1)
        wf.step("pass")
        wf.step("fail")
        assert receiver.posts("/q") == []  # queued, not sent inline
        [message] = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
        records = [{"messageId": message["MessageId"], "body": message["Body"]}]
        assert outbound.handle_sqs_records(records) == {"batchItemFailures": []}  # 500
        assert len(receiver.posts("/q")) == 1
        attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        assert int(attrs["ApproximateNumberOfMessagesDelayed"]) == 1  # the retry, delayed


@pytest.mark.parametrize(
    ("url", "private"),
    [
        ("ftp://hooks.example/x", True),
        ("http://hooks.example/x", False),  # HTTPS only outside development
        ("https://user:pw@hooks.example/x", True),
        ("https://127.0.0.1/x", False),  # the outbound guard: no private addresses
        ("", True),
    ],
)
def test_bad_urls_are_refused(client, db, monkeypatch, url, private):
    if private:
        monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    alice = api_data.make_user("alice")
    r = client.http.post("/webhook-endpoints", headers=alice.json(), body=json.dumps({"url": url}))
    assert r.status_code == 400, r.body
    assert r.json_body["extra_info"]["field"] == "url"


def test_a_registry_endpoint_for_all_its_workflows(client, loopback, jenkins, receiver):
    from standardwebhooks.webhooks import Webhook

    from emulators.crates import wtroc_metadata, zip_crate

    hub = api_data.make_registry(client, "WorkflowHub", "wfh")
    endpoint = register(client, hub, receiver.hook_url("/hub"))
    assert endpoint["workflow"] is None
    data = zip_crate(
        wtroc_metadata(name="hubbed", instances=[("jenkins", jenkins.url, "job/hubbed")])
    )
    body = {"rocrate": api_data.b64(data), "version": "1", "public": False}
    r = api_data.submit(client, hub, body, path="/registries/current/workflows")
    assert r.status_code == 201, r.body
    from chalicelib.db import session_scope
    from chalicelib.models import TestInstance
    from tests.support.notify import JenkinsWorkflow

    wf_uuid = r.json_body["uuid"]
    [instance_uuid] = api_data.instance_uuids(wf_uuid)
    with session_scope() as s:
        iid = s.query(TestInstance.id).filter_by(uuid=instance_uuid).scalar()
    wf = JenkinsWorkflow(wf_uuid, instance_uuid, iid, jenkins, "job/hubbed", [])
    wf.step("pass")
    wf.step("fail")
    [post] = receiver.posts("/hub")
    event = Webhook(endpoint["secret"]).verify(post.body, post.headers)
    assert event["data"]["event"] == "BUILD_FAILED"
    # Another principal cannot see or change the registry's endpoint.
    alice = api_data.make_user("alice")
    r = client.http.get(f"/webhook-endpoints/{endpoint['uuid']}", headers=alice.headers)
    assert r.status_code == 404
    r = client.http.delete(f"/webhook-endpoints/{endpoint['uuid']}", headers=hub.headers)
    assert r.status_code == 204
