"""Transitions (issue 11): a scripted build sequence on the emulated Jenkins — pass, fail,
fail, pass — makes exactly one BUILD_FAILED and one BUILD_RECOVERED, none for the first
build; subscribers get what they chose; SES mails only verified addresses."""

from __future__ import annotations

import json

import pytest

from chalicelib.services.transitions import BUILD_FAILED, BUILD_RECOVERED, changes
from emulators.jenkins import JenkinsEmulator
from tests.support import api_data
from tests.support.notify import jenkins_workflow, verify_email

# --- the pure rule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("baseline", "statuses", "expected"),
    [
        (None, ["passed"], []),  # a first build is not a recovery
        (None, ["failed"], []),
        (None, ["passed", "failed"], [(1, BUILD_FAILED)]),
        ("passed", ["failed", "failed", "passed"], [(0, BUILD_FAILED), (2, BUILD_RECOVERED)]),
        ("failed", ["error"], []),  # error is failing too
        ("error", ["passed"], [(0, BUILD_RECOVERED)]),
        ("passed", ["passed", "passed"], []),
    ],
)
def test_changes(baseline, statuses, expected):
    assert changes(baseline, statuses) == expected


# --- end to end on the emulated CI ----------------------------------------------------------


@pytest.fixture
def aws():
    from moto import mock_aws

    with mock_aws():
        import boto3

        boto3.client("ses", region_name="eu-west-1").verify_email_identity(
            EmailAddress="lifemonitor@lm.test"
        )
        yield


def sent_mails() -> list:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return list(ses_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"].sent_messages)


def subscribe(client, actor, wf: str, events: list[str]) -> None:
    r = client.http.put(f"/workflows/{wf}/subscribe", headers=actor.json(), body=json.dumps(events))
    assert r.status_code == 201, r.body


def notifications(client, actor) -> list[dict]:
    r = client.http.get("/users/current/notifications", headers=actor.headers)
    assert r.status_code == 200, r.body
    return r.json_body["items"]


def events_of(items: list[dict]) -> list[str]:
    return sorted(n["event"] for n in items)


@pytest.fixture
def jenkins():
    with JenkinsEmulator() as j:
        yield j


def test_pass_fail_fail_pass(client, db, aws, jenkins, monkeypatch):
    from chalicelib.jobs import notify

    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("LM_EMAIL_BACKEND", "ses")
    monkeypatch.setenv("LM_EMAIL_SENDER", "lifemonitor@lm.test")
    alice = api_data.make_user("alice")  # the submitter: subscribed to ALL on registration
    bob = api_data.make_user("bob")
    carol = api_data.make_user("carol")
    dave = api_data.make_user("dave")  # not subscribed
    wf = jenkins_workflow(client, alice, jenkins, "seq")
    subscribe(client, bob, wf.uuid, ["BUILD_FAILED"])
    subscribe(client, carol, wf.uuid, ["BUILD_RECOVERED"])
    verify_email(alice.user_id)
    verify_email(bob.user_id)  # carol's address stays unverified

    assert wf.step("pass") == {"updated": 1}
    for actor in (alice, bob, carol, dave):
        assert notifications(client, actor) == []  # the first build is not a recovery
    wf.step("fail")
    wf.step("fail")
    wf.step("running")  # a running build changes nothing
    wf.step("pass")
    wf.step("pass")

    assert events_of(notifications(client, alice)) == [BUILD_FAILED, BUILD_RECOVERED]
    assert events_of(notifications(client, bob)) == [BUILD_FAILED]
    assert events_of(notifications(client, carol)) == [BUILD_RECOVERED]
    assert notifications(client, dave) == []
    [failed, recovered] = sorted(notifications(client, alice), key=lambda n: n["event"])
    assert failed["name"] == f"TestBuild '2' @ instance '{wf.instance_uuid}' FAILED"
    build = failed["data"]["build"]
    assert build["build_id"] == "2" and build["status"] == "failed"
    assert build["instance"]["uuid"] == wf.instance_uuid
    assert build["workflow"] == {"uuid": wf.uuid, "name": "sort-and-change-case", "version": "1"}
    assert recovered["data"]["build"]["build_id"] == "5"

    # Refreshing again (a duplicate delivery, a webhook) adds nothing.
    from chalicelib.jobs import refresh

    refresh.process_batch([wf.instance_id])
    assert len(notifications(client, alice)) == 2

    # E-mail: one per notification of a verified recipient, none for carol.
    result = notify.every_minute()
    assert result["email"] == {"sent": 3, "failed": 0, "skipped": 1}
    mails = sent_mails()
    recipients = sorted(m.destinations["ToAddresses"][0] for m in mails)
    assert recipients == ["alice@example.org", "alice@example.org", "bob@example.org"]
    subjects = sorted(m.subject for m in mails)
    assert sum(s.endswith("is failing") for s in subjects) == 2  # alice and bob
    assert sum(s.endswith("has recovered") for s in subjects) == 1  # alice
    assert all(
        s.startswith('Workflow "sort-and-change-case (1)": test instance ') for s in subjects
    )
    for m in mails:
        assert m.body  # moto keeps the HTML part as the body when one is given
        assert "<html>" in m.body or "<p>" in m.body
    # Sent once: a second run finds nothing due.
    assert notify.every_minute()["email"] == {"sent": 0, "failed": 0, "skipped": 0}
    emailed = [n for n in notifications(client, alice) if "emailed" in n]
    assert len(emailed) == 2
    assert all("emailed" not in n for n in notifications(client, carol))


def test_several_new_builds_in_one_refresh(client, db, jenkins, monkeypatch):
    """A refresh that finds pass → fail → pass at once still reports both changes."""
    from chalicelib.jobs import refresh

    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    alice = api_data.make_user("alice")
    wf = jenkins_workflow(client, alice, jenkins, "batch")
    wf.step("pass")
    wf.history += ["fail", "fail"]
    wf.step("pass")
    assert events_of(notifications(client, alice)) == [BUILD_FAILED, BUILD_RECOVERED]
    refresh.process_batch([wf.instance_id])
    assert len(notifications(client, alice)) == 2


def test_first_refresh_with_history_notifies_nothing(client, db, jenkins, monkeypatch):
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    alice = api_data.make_user("alice")
    wf = jenkins_workflow(client, alice, jenkins, "history")
    wf.history += ["fail", "pass", "fail"]
    wf.step("pass")
    assert notifications(client, alice) == []
    wf.step("fail")
    assert events_of(notifications(client, alice)) == [BUILD_FAILED]


def test_private_workflow_notifies_only_readers(client, db, jenkins, monkeypatch):
    """A subscriber who can no longer read the workflow (made private) hears nothing."""
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    alice = api_data.make_user("alice")
    bob = api_data.make_user("bob")
    wf = jenkins_workflow(client, alice, jenkins, "private")
    subscribe(client, bob, wf.uuid, ["ALL"])
    r = client.http.put(
        f"/workflows/{wf.uuid}", headers=alice.json(), body=json.dumps({"public": False})
    )
    assert r.status_code in (201, 204), r.body
    wf.step("pass")
    wf.step("fail")
    assert events_of(notifications(client, alice)) == [BUILD_FAILED]
    assert notifications(client, bob) == []


def test_webhooks_in_detect_transitions_too(client, db, jenkins, monkeypatch):
    """A Jenkins notification (webhooks in) stores builds through the same write path: a
    failure after a pass is notified at once."""
    from chalicelib.secrets import get_secrets

    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    get_secrets().put("webhooks/jenkins/token", "jenkins-token")
    alice = api_data.make_user("alice")
    wf = jenkins_workflow(client, alice, jenkins, "pushed")
    wf.step("pass")
    [failed, _] = jenkins.set_builds(wf.job, [{"result": "FAILURE"}, {"result": "SUCCESS"}])
    payload = {
        "name": "pushed",
        "url": f"{wf.job}/",
        "build": {
            "full_url": f"{jenkins.url}/{wf.job}/{failed['number']}/",
            "number": failed["number"],
            "phase": "COMPLETED",
            "status": "FAILURE",
            "url": f"{wf.job}/{failed['number']}/",
        },
    }
    r = client.http.post(
        "/webhooks/jenkins",
        headers={"Content-Type": "application/json", "X-Webhook-Token": "jenkins-token"},
        body=json.dumps(payload),
    )
    assert r.status_code == 202, r.body
    assert r.json_body["refreshed"] == [wf.instance_uuid]
    assert events_of(notifications(client, alice)) == [BUILD_FAILED]
