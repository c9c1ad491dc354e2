"""Asynchronous registration (`async: true`, contract §1.3): 302 to `/jobs/status/<id>`, the
job run inline without a queue and by the refresh worker with one (moto SQS), its status
readable by its own principal only, bad input still answered at once, secrets and uploaded
crates never kept in the job row and removed once the job ran.

One module-scoped database (tests.support.api_data.World), as in test_submission.py.
"""

from __future__ import annotations

import io
import json
import uuid as uuidlib
import zipfile
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.api.helpers import assert_problem
from tests.support import api_data
from tests.support.api_data import b64, crate, row_counts
from tests.support.fileserver import FileServer

REGISTERED_KEYS = {"uuid", "wf_version", "name", "meta"}
JOB_KEYS = {"job_id", "type", "status", "created", "modified"}


@pytest.fixture(scope="module")
def world(database_url, chalice_app, tmp_path_factory):
    with api_data.open_world(database_url, chalice_app, tmp_path_factory) as w:
        w.data["alice"] = api_data.make_user("alice")
        w.data["bob"] = api_data.make_user("bob")
        w.data["hub"] = api_data.make_registry(w.client, "Hub", "hub-app")
        w.data["other_hub"] = api_data.make_registry(w.client, "Other", "other-app")
        yield w


@pytest.fixture(autouse=True)
def _world_env(world, monkeypatch):
    world.activate(monkeypatch)


@pytest.fixture
def alice(world):
    return world.data["alice"]


@pytest.fixture
def bob(world):
    return world.data["bob"]


@pytest.fixture(scope="module")
def _server():
    with FileServer() as server:
        yield server


@pytest.fixture
def files(_server, monkeypatch):
    from chalicelib import http

    _server.files.clear()
    _server.requests.clear()
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    http.reset()
    yield _server
    http.reset()


@pytest.fixture
def queue(monkeypatch):
    from moto import mock_aws

    with mock_aws():
        import boto3

        sqs = boto3.client("sqs", region_name="eu-west-1")
        url = sqs.create_queue(QueueName="lifemonitor-refresh")["QueueUrl"]
        monkeypatch.setenv("LM_REFRESH_QUEUE_URL", url)
        yield sqs, url


# -- helpers ----------------------------------------------------------------------------------


def job_path(response) -> str:
    """The 302's Location, as a path of ours."""
    assert response.status_code == 302, response.body
    location = {k.lower(): v for k, v in response.headers.items()}["location"]
    assert location.startswith("http://lm.test/jobs/status/"), location
    return location[len("http://lm.test") :]


def poll(world, actor, path):
    r = world.http.get(path, headers=actor.headers)
    assert r.status_code == 200, r.body
    assert set(r.json_body) >= JOB_KEYS
    assert r.json_body["type"] == "register_workflow"
    return r.json_body


def job_rows() -> list[dict]:
    from chalicelib.db import get_engine
    from chalicelib.models import RegistrationJob

    with get_engine().connect() as conn:
        return [dict(row._mapping) for row in conn.execute(select(RegistrationJob.__table__))]


def job_row(job_id: str) -> dict:
    [row] = [r for r in job_rows() if r["uuid"] == job_id]
    return row


def stashed_crates(world) -> list:
    folder = world.data_dir / "crates" / "jobs"
    return sorted(folder.glob("*")) if folder.exists() else []


def registered_of(wf_uuid: str, version: str) -> dict:
    """What the synchronous 201 gives for this version, from its row."""
    from chalicelib.api import serializers
    from chalicelib.db import session_scope
    from chalicelib.models import Workflow, WorkflowVersion

    with session_scope() as s:
        v = s.scalar(
            select(WorkflowVersion)
            .join(Workflow)
            .where(Workflow.uuid == wf_uuid, WorkflowVersion.version == version)
        )
        return serializers.registered(v)


def _dump() -> str:
    from chalicelib.db import get_engine
    from chalicelib.models import Base

    with get_engine().connect() as conn:
        return "\n".join(
            repr(row) for t in Base.metadata.sorted_tables for row in conn.execute(select(t))
        )


# -- inline (no queue): the job has run when the 302 is answered ------------------------------


def test_async_upload_completes_with_the_synchronous_body(world, alice):
    r = api_data.submit(
        world.client,
        alice,
        {
            "rocrate": b64(crate("async-upload")),
            "version": "1",
            "name": "async-upload",
            "async": True,
        },
    )
    path = job_path(r)
    assert r.json_body["status"] == "completed"
    job = poll(world, alice, path)
    assert job["job_id"] == path.rsplit("/", 1)[1]
    assert job["status"] == "completed" and "error" not in job
    result = job["result"]
    assert set(result) == REGISTERED_KEYS
    assert result["name"] == "async-upload" and result["wf_version"] == "1"
    assert result == registered_of(result["uuid"], "1")
    # The workflow exists and is readable, as after a synchronous registration.
    wf = world.http.get(f"/workflows/{result['uuid']}", headers=alice.headers)
    assert wf.status_code == 200, wf.body
    assert wf.json_body["name"] == "async-upload"
    # The stashed upload is gone; the table never held it.
    assert stashed_crates(world) == []
    row = job_row(job["job_id"])
    assert row["crate_location"] is None and "rocrate" not in row["body"]
    assert row["principal"]["user_id"] == alice.user_id and row["route"] == "user"


def test_sync_and_async_bodies_have_the_same_shape(world, alice):
    sync = api_data.submit(world.client, alice, {"rocrate": b64(crate("sync-one")), "version": "1"})
    assert sync.status_code == 201, sync.body
    r = api_data.submit(
        world.client, alice, {"rocrate": b64(crate("async-one")), "version": "1", "async": True}
    )
    result = poll(world, alice, job_path(r))["result"]
    assert set(result) == set(sync.json_body) == REGISTERED_KEYS
    assert set(result["meta"]) == set(sync.json_body["meta"])


def test_async_roc_link_sends_authorization_and_keeps_no_secret(world, alice, files):
    token = "Bearer async-" + uuidlib.uuid4().hex
    link = files.add("/async.zip", crate("async-link"), authorization=token)
    r = api_data.submit(
        world.client,
        alice,
        {"roc_link": link, "version": "1", "authorization": token, "async": True},
    )
    job = poll(world, alice, job_path(r))
    assert job["status"] == "completed", job
    [request] = files.received("/async.zip")
    assert request.headers["authorization"] == token
    stored = api_data.secrets_file(world.data_dir)
    assert not [k for k in stored if "/jobs/" in k], stored
    # Kept for later downloads, like a synchronous registration: under the version only.
    [key] = [k for k, v in stored.items() if v == token]
    assert key.startswith("/lifemonitor/test/workflows/") and key.endswith("/authorization"), key
    row = job_row(job["job_id"])
    assert token not in json.dumps(row, default=str)
    assert row["authorization_key"] is None
    assert token not in _dump()


def _zip_without_metadata() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("README.md", "no ro-crate-metadata.json here")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "body",
    [
        {"rocrate": b64(b"this is not a zip"), "version": "1"},
        {"rocrate": b64(_zip_without_metadata()), "version": "1"},
    ],
    ids=["not-a-zip", "no-metadata"],
)
def test_async_invalid_crate_records_the_synchronous_problem(world, alice, body):
    sync = api_data.submit(world.client, alice, body)
    assert sync.status_code in (400, 422), sync.body
    before = row_counts()
    r = api_data.submit(world.client, alice, {**body, "async": True})
    job = poll(world, alice, job_path(r))
    assert job["status"] == "error" and "result" not in job
    assert job["error"] == sync.json_body  # the very body the synchronous call answered
    after = row_counts()
    assert {t: after[t] - before[t] for t in after if after[t] != before[t]} == {
        "registration_jobs": 1
    }
    assert stashed_crates(world) == []


def test_async_roc_link_that_fails_records_the_400(world, alice, files):
    link = files.add("/locked.zip", crate("locked"), authorization="Bearer right")
    r = api_data.submit(
        world.client,
        alice,
        {"roc_link": link, "version": "1", "authorization": "Bearer wrong", "async": True},
    )
    job = poll(world, alice, job_path(r))
    assert job["status"] == "error"
    assert job["error"]["status"] == 400 and "roc_link" in job["error"]["detail"]
    assert job["error"]["instance"] == "http://lm.test/users/current/workflows"
    assert not [k for k in api_data.secrets_file(world.data_dir) if "/jobs/" in k]


def _bad_requests(world):
    d = world.data
    good = {"rocrate": b64(crate("never")), "version": "1", "async": True}
    return [
        (d["alice"], "/users/current/workflows", {**good, "version": None}, 400),
        (d["alice"], "/users/current/workflows", {**good, "rocrate": "%%%"}, 400),
        (d["alice"], "/users/current/workflows", {**good, "async": "yes"}, 400),
        (d["alice"], "/users/current/workflows", {**good, "uuid": "nope"}, 400),
        (d["alice"], "/users/current/workflows", {**good, "name": "n" * 5000}, 400),
        (d["alice"], "/users/current/workflows", {**good, "roc_link": "ftp://x/y.zip"}, 400),
        (d["alice"], "/users/current/workflows", {**good, "registry": "no-such-hub"}, 404),
        (d["alice"], "/users/current/workflows", {"identifier": "1", "async": True}, 400),
        (api_data.ANONYMOUS, "/users/current/workflows", good, 401),
        (d["hub"], "/users/current/workflows", good, 403),
        (d["hub"], "/users/987654/workflows", good, 401),
        (
            d["alice"],
            f"/registries/{uuidlib.uuid4()}/workflows",
            {"identifier": "1", "async": True},
            404,
        ),
    ]


def test_bad_input_is_answered_at_once_and_makes_no_job(world):
    before = row_counts()
    for actor, path, body, status in _bad_requests(world):
        body = {k: v for k, v in body.items() if v is not None}
        r = api_data.submit(world.client, actor, body, path=path)
        assert_problem(r, status)
    assert row_counts() == before
    assert stashed_crates(world) == []
    assert not [k for k in api_data.secrets_file(world.data_dir) if "/jobs/" in k]


def test_forbidden_scope_is_answered_at_once(world, alice):
    reader = api_data.make_user("alice", ["user.profile"])
    before = row_counts()
    r = api_data.submit(
        world.client, reader, {"rocrate": b64(crate("x")), "version": "1", "async": True}
    )
    assert_problem(r, 403)
    assert row_counts() == before


# -- who may read a job ----------------------------------------------------------------------


def test_only_the_creator_reads_a_job(world, alice, bob):
    r = api_data.submit(
        world.client, alice, {"rocrate": b64(crate("mine")), "version": "1", "async": True}
    )
    path = job_path(r)
    assert poll(world, alice, path)["status"] == "completed"
    other_key_of_alice = api_data.make_user("alice", ["user.profile"])
    assert poll(world, other_key_of_alice, path)["status"] == "completed"  # same user
    for actor in (bob, api_data.ANONYMOUS, world.data["hub"]):
        assert_problem(world.http.get(path, headers=actor.headers), 404)
    for unknown in (str(uuidlib.uuid4()), "not-a-uuid", "x" * 300):
        assert_problem(world.http.get(f"/jobs/status/{unknown}", headers=alice.headers), 404)


def test_a_registry_reads_its_own_jobs_only(world, alice):
    hub, other = world.data["hub"], world.data["other_hub"]
    r = api_data.submit(
        world.client,
        hub,
        {"rocrate": b64(crate("hub-async")), "version": "1", "async": True},
        path="/registries/current/workflows",
    )
    path = job_path(r)
    job = poll(world, hub, path)
    assert job["status"] == "completed", job
    assert job["result"] == registered_of(job["result"]["uuid"], "1")
    for actor in (other, alice, api_data.ANONYMOUS):
        assert_problem(world.http.get(path, headers=actor.headers), 404)


def test_invalid_credentials_on_the_status_are_401(world):
    r = world.http.get(f"/jobs/status/{uuidlib.uuid4()}", headers={"ApiKey": "wrong"})
    assert_problem(r, 401)


# -- the queue: the worker runs the job --------------------------------------------------------


def _received(sqs, url) -> list[dict]:
    messages = []
    while got := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60
    ).get("Messages", []):
        messages.extend(got)
    return messages


def _event(world, bodies: list[str]) -> dict:
    event = world.client.events.generate_sqs_event(bodies, queue_name="lifemonitor-refresh")
    for n, record in enumerate(event["Records"]):
        record["messageId"] = f"m{n}"
    return event


@pytest.fixture
def fake_ci():
    from chalicelib import testing
    from chalicelib.models import utcnow
    from chalicelib.testing import BuildData, FetchResult

    class FakeCI:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def fetch_builds(self, service_url, instance, limit):
            self.calls.append(instance.resource)
            started = utcnow() - timedelta(minutes=5)
            return FetchResult(
                builds=[
                    BuildData(
                        build_id="7",
                        status="passed",
                        started_at=started,
                        finished_at=started + timedelta(minutes=1),
                        duration=60.0,
                        url="https://ci.example/7",
                        revision="abc",
                    )
                ]
            )

    adapter = FakeCI()
    testing.register("fake", lambda: adapter)
    yield adapter
    testing.unregister("fake")


def _fake_instance() -> int:
    from chalicelib.db import session_scope
    from chalicelib.models import TestingService, TestInstance, TestSuite, Workflow, WorkflowVersion

    with session_scope() as s:
        service = TestingService(type="fake", url=f"https://ci-{uuidlib.uuid4().hex[:6]}.example")
        version = WorkflowVersion(workflow=Workflow(name="wf"), version="1")
        inst = TestInstance(
            suite=TestSuite(workflow_version=version, name="suite"),
            resource="job/x/",
            name="x",
            testing_service=service,
        )
        s.add(inst)
        s.flush()
        return inst.id


def test_queued_job_is_run_by_the_worker_once(world, alice, queue, fake_ci):
    from chalicelib.db import session_scope
    from chalicelib.models import Build

    sqs, url = queue
    r = api_data.submit(
        world.client, alice, {"rocrate": b64(crate("queued")), "version": "1", "async": True}
    )
    path = job_path(r)
    job_id = path.rsplit("/", 1)[1]
    assert r.json_body["status"] == "waiting"
    assert poll(world, alice, path)["status"] == "waiting"  # not run inline
    [message] = _received(sqs, url)
    assert json.loads(message["Body"]) == {"kind": "register", "job": job_id}
    assert len(stashed_crates(world)) == 1  # waiting in the crate store, not in the row
    assert "rocrate" not in job_row(job_id)["body"]
    # The worker gets it with a refresh batch; both are handled.
    instance_id = _fake_instance()
    wf_before = row_counts()["workflows"]
    refresh = json.dumps({"v": 1, "host": "ci.example", "instances": [instance_id]})
    result = world.client.lambda_.invoke("worker", _event(world, [message["Body"], refresh]))
    assert result.payload == {"batchItemFailures": []}
    job = poll(world, alice, path)
    assert job["status"] == "completed", job
    assert job["result"] == registered_of(job["result"]["uuid"], "1")
    assert row_counts()["workflows"] == wf_before + 1
    assert stashed_crates(world) == []
    assert fake_ci.calls == ["job/x/"]
    with session_scope() as s:
        assert [b.build_id for b in s.query(Build).filter_by(instance_id=instance_id)] == ["7"]

    # Redelivered: nothing happens (no second workflow, the job as it was).
    modified = job["modified"]
    again = world.client.lambda_.invoke("worker", _event(world, [message["Body"]]))
    assert again.payload == {"batchItemFailures": []}
    assert row_counts()["workflows"] == wf_before + 1
    assert poll(world, alice, path)["modified"] == modified


def test_queued_job_with_a_secret_keeps_it_out_of_the_queue(world, alice, queue, files):
    sqs, url = queue
    token = "Bearer q-" + uuidlib.uuid4().hex
    link = files.add("/queued.zip", crate("queued-link"), authorization=token)
    r = api_data.submit(
        world.client,
        alice,
        {"roc_link": link, "version": "1", "authorization": token, "async": True},
    )
    path = job_path(r)
    job_id = path.rsplit("/", 1)[1]
    [message] = _received(sqs, url)
    assert token not in message["Body"]
    assert (
        api_data.secrets_file(world.data_dir)[f"/lifemonitor/test/jobs/{job_id}/authorization"]
        == token
    )
    assert token not in json.dumps(job_row(job_id), default=str)
    assert files.received("/queued.zip") == []  # nothing fetched before the worker runs
    result = world.client.lambda_.invoke("worker", _event(world, [message["Body"]]))
    assert result.payload == {"batchItemFailures": []}
    assert poll(world, alice, path)["status"] == "completed"
    [request] = files.received("/queued.zip")
    assert request.headers["authorization"] == token
    assert f"/lifemonitor/test/jobs/{job_id}/authorization" not in api_data.secrets_file(
        world.data_dir
    )


def test_queue_failure_is_503_and_the_job_an_error(world, alice, monkeypatch):
    monkeypatch.setenv("LM_REFRESH_QUEUE_URL", "http://127.0.0.1:9/nope")
    from chalicelib import queues

    def fail(queue_url, messages):
        raise RuntimeError("queue down")

    monkeypatch.setattr(queues, "send_messages", fail)
    r = api_data.submit(
        world.client, alice, {"rocrate": b64(crate("unqueued")), "version": "1", "async": True}
    )
    assert_problem(r, 503)
    [row] = [j for j in job_rows() if j["status"] == "error" and j["error"]["status"] == 503]
    assert row["crate_location"] is None
    assert stashed_crates(world) == []


def _waiting_job(world, alice, monkeypatch) -> str:
    """A job written but not run (as if queued)."""
    from chalicelib.services import registration_jobs

    monkeypatch.setenv("LM_REFRESH_QUEUE_URL", "http://queue.test/q")
    from chalicelib import queues

    monkeypatch.setattr(queues, "send_messages", lambda url, messages: len(messages))
    r = api_data.submit(
        world.client, alice, {"rocrate": b64(crate("later")), "version": "1", "async": True}
    )
    monkeypatch.delenv("LM_REFRESH_QUEUE_URL")
    job_id = job_path(r).rsplit("/", 1)[1]
    assert registration_jobs.parse_message({"kind": "register", "job": job_id}) == job_id
    return job_id


def _message(job_id: str) -> str:
    return json.dumps({"kind": "register", "job": job_id})


def test_unexpected_exception_is_recorded_not_retried(world, alice, monkeypatch):
    from chalicelib.jobs import refresh
    from chalicelib.services import registration_jobs

    job_id = _waiting_job(world, alice, monkeypatch)

    def boom(*args, **kwargs):
        raise RuntimeError("database exploded")

    monkeypatch.setattr(registration_jobs, "register", boom)
    records = [{"messageId": "m1", "body": _message(job_id)}]
    assert refresh.handle_sqs_records(records) == {"batchItemFailures": []}
    job = poll(world, alice, f"/jobs/status/{job_id}")
    assert job["status"] == "error"
    assert job["error"]["status"] == 500
    assert "exploded" not in json.dumps(job)  # logged, not shown
    assert stashed_crates(world) == []


def test_a_dead_run_is_recorded_on_redelivery(world, alice, monkeypatch):
    from sqlalchemy import update

    from chalicelib.db import session_scope
    from chalicelib.jobs import refresh
    from chalicelib.models import RegistrationJob, utcnow

    job_id = _waiting_job(world, alice, monkeypatch)

    def started(ago: timedelta) -> None:
        with session_scope() as s:
            s.execute(
                update(RegistrationJob)
                .where(RegistrationJob.uuid == job_id)
                .values(status="registration started", modified=utcnow() - ago)
            )

    records = [{"messageId": "m1", "body": _message(job_id)}]
    # Started a moment ago (maybe running elsewhere): not run again, the message comes back.
    started(timedelta(seconds=10))
    assert refresh.handle_sqs_records(records) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert poll(world, alice, f"/jobs/status/{job_id}")["status"] == "registration started"
    # Started longer ago than a worker can live: that run died; the error is recorded.
    started(timedelta(minutes=10))
    assert refresh.handle_sqs_records(records) == {"batchItemFailures": []}
    job = poll(world, alice, f"/jobs/status/{job_id}")
    assert job["status"] == "error" and job["error"]["status"] == 500
    assert stashed_crates(world) == []


def test_bad_registration_messages_are_poison(world):
    from chalicelib.jobs import refresh

    records = [
        {"messageId": "no-job", "body": json.dumps({"kind": "register"})},
        {"messageId": "bad-job", "body": json.dumps({"kind": "register", "job": "../x"})},
        {"messageId": "unknown", "body": _message(str(uuidlib.uuid4()))},  # dropped, logged
    ]
    assert refresh.handle_sqs_records(records) == {
        "batchItemFailures": [{"itemIdentifier": "no-job"}, {"itemIdentifier": "bad-job"}]
    }


def test_housekeeping_deletes_finished_jobs_past_retention(world, alice, monkeypatch):
    from chalicelib.jobs import notify
    from chalicelib.models import utcnow
    from chalicelib.services.registration_jobs import JOB_RETENTION

    waiting = _waiting_job(world, alice, monkeypatch)
    r = api_data.submit(
        world.client, alice, {"rocrate": b64(crate("kept")), "version": "1", "async": True}
    )
    finished = job_path(r).rsplit("/", 1)[1]
    ids = {j["uuid"] for j in job_rows()}
    assert notify.every_hour(utcnow())["registration_jobs"] == 0
    later = utcnow() + JOB_RETENTION + timedelta(days=1)
    assert notify.every_hour(later)["registration_jobs"] == len(ids) - 1
    remaining = {j["uuid"] for j in job_rows()}
    assert finished not in remaining
    assert remaining == {waiting}  # a job not run yet is never deleted


def test_housekeeping_expires_jobs_whose_message_was_lost(world, alice, monkeypatch):
    """A job still waiting hours after it was queued never will run (its message was
    dead-lettered): recorded as an error, its stashed crate removed; a recent one waits."""
    from chalicelib.jobs import notify
    from chalicelib.models import utcnow
    from chalicelib.services.registration_jobs import ABANDONED_AFTER

    lost = _waiting_job(world, alice, monkeypatch)
    assert stashed_crates(world)
    notify.every_hour(utcnow() + ABANDONED_AFTER - timedelta(minutes=5))
    assert poll(world, alice, f"/jobs/status/{lost}")["status"] == "waiting"
    notify.every_hour(utcnow() + ABANDONED_AFTER + timedelta(minutes=5))
    job = poll(world, alice, f"/jobs/status/{lost}")
    assert job["status"] == "error" and "never started" in job["error"]["detail"]
    assert stashed_crates(world) == []


def test_a_job_of_a_deleted_account_is_refused_when_it_runs(world, monkeypatch):
    """The job acts for whoever asked, later: an account deleted meanwhile gets nothing."""
    from sqlalchemy import delete

    from chalicelib.db import session_scope
    from chalicelib.jobs import refresh
    from chalicelib.models import User

    carol = api_data.make_user("carol")
    job_id = _waiting_job(world, carol, monkeypatch)
    with session_scope() as s:
        s.execute(delete(User).where(User.id == carol.user_id))
    records = [{"messageId": "m1", "body": _message(job_id)}]
    assert refresh.handle_sqs_records(records) == {"batchItemFailures": []}
    [row] = [j for j in job_rows() if j["uuid"] == job_id]
    assert row["status"] == "error" and row["error"]["status"] == 403
    assert "deleted" in row["error"]["detail"]
    assert stashed_crates(world) == []
