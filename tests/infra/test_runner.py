"""The local runner: the `refresh` schedule fired through Chalice's own handler wrapper, and
the SQS queue drained into `worker` as the event source mapping would (successes deleted,
reported failures left for the redrive policy)."""

from __future__ import annotations

import json
import types

import boto3
import pytest
from chalice import Chalice, Rate
from moto import mock_aws

import app as real_app
from infra import runner

REGION = "eu-west-1"


def fake_app(fail_bodies: set[str] = frozenset(), crash: bool = False):
    """A Chalice app shaped like app.py, recording what its handlers received."""
    app = Chalice(app_name="runner-test")
    seen: dict[str, list] = {"refresh": [], "worker": []}

    @app.schedule(Rate(2, unit=Rate.MINUTES), name="refresh")
    def refresh(event):
        seen["refresh"].append((event.to_dict()["detail-type"], event.context.function_name))
        return {"mode": "test"}

    @app.on_sqs_message(queue="q", batch_size=3, name="worker")
    def worker(event):
        if crash:
            raise RuntimeError("boom")
        records = list(event)
        seen["worker"].append(
            ([r.body for r in records], event.context.get_remaining_time_in_millis())
        )
        return {
            "batchItemFailures": [
                {"itemIdentifier": r.to_dict()["messageId"]}
                for r in records
                if r.body in fail_bodies
            ]
        }

    return types.SimpleNamespace(app=app, refresh=refresh, worker=worker), seen


@pytest.fixture
def queue(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
        yield sqs, url


def test_every_schedule_and_queue_of_app_py_is_served():
    assert runner.schedule_rate(real_app) == 300.0  # Rate(5, MINUTES)
    names = {s.name for s in runner.schedules(real_app)}
    assert {"refresh", "notify", "housekeeping"} <= names
    queues = {c.name: (c.queue, c.batch_size) for c in runner.consumers(real_app)}
    assert queues["worker"] == ("lifemonitor-refresh", 10)
    assert queues["webhook_worker"][0] == "lifemonitor-webhooks"
    r = runner.Runner(real_app, rates={"refresh": 2})
    assert {s.name: s.rate for s in r.schedules}["refresh"] == 2


def test_fire_refresh_goes_through_the_schedule_wrapper(queue):
    module, seen = fake_app()
    r = runner.Runner(module, region=REGION)
    assert [(s.name, s.rate) for s in r.schedules] == [("refresh", 120.0)]
    assert r.fire_refresh() == {"mode": "test"}
    assert seen["refresh"] == [("Scheduled Event", "refresh")]


def test_drain_deletes_done_messages_and_leaves_failures(queue):
    sqs, url = queue
    for body in ("a", "b", "c"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    module, seen = fake_app(fail_bodies={"b"})
    r = runner.Runner(module, queue_urls={"q": url}, region=REGION, wait=0)
    handled = 0
    while handled < 3:
        n = r.drain_once("worker", wait=0)
        assert n, "messages vanished"
        handled += n
    bodies = sorted(b for batch, _ in seen["worker"] for b in batch)
    assert bodies == ["a", "b", "c"]
    assert all(remaining > 60_000 for _, remaining in seen["worker"])  # a Lambda-like budget
    assert r.deleted == 2
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "1"  # "b", back after the timeout
    assert attrs["ApproximateNumberOfMessages"] == "0"


def test_a_crashing_worker_deletes_nothing(queue):
    sqs, url = queue
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"v": 1, "instances": [1]}))
    module, _seen = fake_app(crash=True)
    r = runner.Runner(module, queue_urls={"q": url}, region=REGION, wait=0)
    assert r.drain_once("worker", wait=0) == 1
    assert r.deleted == 0
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_an_empty_queue_invokes_nothing(queue):
    _sqs, url = queue
    module, seen = fake_app()
    r = runner.Runner(module, queue_urls={"q": url}, region=REGION)
    assert r.drain_once("worker", wait=0) == 0
    assert seen["worker"] == []


def test_the_queue_is_found_by_its_stage_name(queue):
    sqs, _url = queue
    url = sqs.create_queue(QueueName="q-staging")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="x")
    module, seen = fake_app()
    r = runner.Runner(module, stage="staging", region=REGION)
    assert r.drain_once("worker", wait=0) == 1
    assert seen["worker"][0][0] == ["x"]
