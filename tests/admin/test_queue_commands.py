"""`admin queue status` and `queue redrive` against moto's SQS: the queues' counts and their
dead letters moved back, with the stateful stack's names and redrive policies."""

from __future__ import annotations

import json

import pytest
from moto import mock_aws

from chalicelib.admin import run


@pytest.fixture
def sqs(monkeypatch):
    """The stage's two queues, each with its dead-letter queue, and the settings naming
    them (as a deployed function has them)."""
    with mock_aws():
        import boto3

        client = boto3.client("sqs", region_name="eu-west-1")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
        urls = {}
        for name in ("refresh", "webhooks"):
            dlq = client.create_queue(QueueName=f"lifemonitor-{name}-test-dlq")["QueueUrl"]
            arn = client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            url = client.create_queue(
                QueueName=f"lifemonitor-{name}-test",
                Attributes={
                    "RedrivePolicy": json.dumps(
                        {"deadLetterTargetArn": arn, "maxReceiveCount": "5"}
                    )
                },
            )["QueueUrl"]
            urls[name] = (url, dlq)
        monkeypatch.setenv("LM_REFRESH_QUEUE_URL", urls["refresh"][0])
        monkeypatch.setenv("LM_WEBHOOK_QUEUE_URL", urls["webhooks"][0])
        yield client, urls


def _json(*argv):
    result = run([*argv, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _bodies(client, url) -> list[str]:
    out = []
    while True:
        got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return sorted(out)
        out += [m["Body"] for m in got]


def test_status_counts_each_queue_and_its_dead_letters(sqs):
    client, urls = sqs
    refresh, refresh_dlq = urls["refresh"]
    for n in range(3):
        client.send_message(QueueUrl=refresh, MessageBody=json.dumps({"n": n}))
    client.send_message(QueueUrl=refresh_dlq, MessageBody="dead")
    client.send_message(QueueUrl=urls["webhooks"][0], MessageBody="later", DelaySeconds=60)
    items = {i["name"]: i for i in _json("queue", "status")}
    assert items["refresh"]["waiting"] == 3 and items["refresh"]["dead_letters"] == 1
    assert items["refresh"]["dead_letter_url"] == refresh_dlq
    assert items["webhooks"]["delayed"] == 1 and items["webhooks"]["dead_letters"] == 0
    text = run(["queue", "status"]).stdout
    assert text.splitlines()[0].split() == ["QUEUE", "WAITING", "IN", "FLIGHT", "DELAYED", "DEAD"]


def test_redrive_moves_every_dead_letter_back_once(sqs):
    client, urls = sqs
    refresh, refresh_dlq = urls["refresh"]
    bodies = sorted(json.dumps({"v": 1, "host": "ci", "instances": [n]}) for n in range(23))
    for body in bodies:
        client.send_message(QueueUrl=refresh_dlq, MessageBody=body)
    assert _json("queue", "redrive", "refresh") == {"queue": "refresh", "moved": 23}
    assert _bodies(client, refresh) == bodies
    assert _bodies(client, refresh_dlq) == []
    assert _json("queue", "redrive", "refresh")["moved"] == 0  # nothing left to move


def test_redrive_keeps_to_its_limit_and_the_rest_stays(sqs):
    client, urls = sqs
    webhooks, webhooks_dlq = urls["webhooks"]
    for n in range(5):
        client.send_message(
            QueueUrl=webhooks_dlq,
            MessageBody=f"d{n}",
            MessageAttributes={"kind": {"DataType": "String", "StringValue": "delivery"}},
        )
    assert _json("queue", "redrive", "webhooks", "--limit", "2")["moved"] == 2
    got = client.receive_message(
        QueueUrl=webhooks, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
    assert len(got) == 2
    assert all(m["MessageAttributes"]["kind"]["StringValue"] == "delivery" for m in got)
    assert len(_bodies(client, webhooks_dlq)) == 3


def test_refusals_are_one_line(sqs, monkeypatch):
    result = run(["queue", "redrive", "nope"])
    assert result.exit_code == 2 and "invalid choice" in result.stderr
    monkeypatch.delenv("LM_WEBHOOK_QUEUE_URL")
    result = run(["queue", "redrive", "webhooks"])
    assert result.exit_code == 1 and "not configured" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    monkeypatch.setenv("LM_REFRESH_QUEUE_URL", sqs[1]["refresh"][0] + "-gone")
    result = run(["queue", "status"])
    assert result.exit_code == 1 and "SQS refused" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_queues_configured(monkeypatch):
    monkeypatch.delenv("LM_REFRESH_QUEUE_URL", raising=False)
    monkeypatch.delenv("LM_WEBHOOK_QUEUE_URL", raising=False)
    result = run(["queue", "status"])
    assert result.exit_code == 0 and "run inline" in result.stdout
    assert _json("queue", "status") == []
