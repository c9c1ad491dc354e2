"""The status refresh (chalicelib/jobs/refresh.py): claiming due instances, the inline and
SQS paths, storing builds idempotently, the status pointers and error back-off."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.testing import BuildData, CIError, FetchResult

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
CI_A = "https://ci-a.example/jenkins"
CI_B = "https://ci-b.example"


def at(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def build(build_id: str, status: str, minutes_ago: float, **kw) -> BuildData:
    finished = None if status in {"running", "waiting"} else at(minutes_ago - 1)
    return BuildData(
        build_id=build_id,
        status=status,
        started_at=at(minutes_ago),
        finished_at=finished,
        duration=60.0 if finished else None,
        url=f"https://ci.example/build/{build_id}",
        revision="abc123",
        **kw,
    )


@dataclass
class FakeCI:
    """Builds (newest first), an exception, or a 304 per instance resource."""

    builds: dict[str, list[BuildData]] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)
    not_modified: set[str] = field(default_factory=set)
    calls: list[tuple[str, str, str | None, int]] = field(default_factory=list)

    def fetch_builds(self, service_url, instance, limit):
        self.calls.append((service_url, instance.resource, instance.etag, limit))
        if instance.resource in self.errors:
            raise self.errors[instance.resource]
        if instance.resource in self.not_modified:
            return FetchResult(builds=[], etag=instance.etag, not_modified=True)
        return FetchResult(
            builds=list(self.builds.get(instance.resource, []))[:limit],
            etag=self.etags.get(instance.resource),
        )


@pytest.fixture
def fake_ci():
    from chalicelib import testing

    adapter = FakeCI()
    testing.register("fake", lambda: adapter)
    yield adapter
    testing.unregister("fake")


def add_instances(
    resources: list[str], url: str = CI_A, service_type: str = "fake", **instance_fields
) -> list[int]:
    """A registry-less workflow version with one suite holding one instance per resource."""
    from chalicelib.db import session_scope
    from chalicelib.models import (
        TestingService,
        TestInstance,
        TestSuite,
        Workflow,
        WorkflowVersion,
    )

    with session_scope() as s:
        service = s.query(TestingService).filter_by(url=url).one_or_none()
        if service is None:
            service = TestingService(type=service_type, url=url)
        version = WorkflowVersion(workflow=Workflow(name="wf"), version="1")
        suite = TestSuite(workflow_version=version, name="suite")
        instances = [
            TestInstance(
                suite=suite, resource=r, name=r, testing_service=service, **instance_fields
            )
            for r in resources
        ]
        s.add_all(instances)
        s.flush()
        return [i.id for i in instances]


def instance(instance_id: int):
    from chalicelib.db import session_scope
    from chalicelib.models import TestInstance

    with session_scope() as s:
        return s.get(TestInstance, instance_id)


def builds_of(instance_id: int) -> dict[str, object]:
    from chalicelib.db import session_scope
    from chalicelib.models import Build

    with session_scope() as s:
        return {b.build_id: b for b in s.query(Build).filter_by(instance_id=instance_id)}


def build_count() -> int:
    from chalicelib.db import session_scope
    from chalicelib.models import Build

    with session_scope() as s:
        return s.query(Build).count()


def dispatch(now: datetime = NOW) -> dict:
    from chalicelib.jobs import refresh

    return refresh.dispatch_due(now=now)


# --- inline refresh ----------------------------------------------------------------------


def test_inline_refresh_stores_builds_and_pointers(db, fake_ci):
    from chalicelib.jobs.refresh import RUNNING_INTERVAL

    [iid] = add_instances(["job-1"])
    fake_ci.builds["job-1"] = [
        build("7", "running", 1),
        build("6", "waiting", 2),
        build("5", "aborted", 3),
        build("4", "failed", 4),
        build("3", "passed", 5),
    ]
    summary = dispatch()
    assert summary == {"mode": "inline", "claimed": 1, "messages": 1, "outcomes": {"updated": 1}}
    assert fake_ci.calls == [(CI_A, "job-1", None, 10)]
    builds = builds_of(iid)
    assert set(builds) == {"3", "4", "5", "6", "7"}
    assert builds["4"].status == "failed"
    assert builds["4"].started_at == at(4)
    assert builds["4"].duration == 60.0
    assert builds["4"].url == "https://ci.example/build/4"
    row = instance(iid)
    assert row.latest_build_id == builds["7"].id
    # running, waiting and aborted are skipped: the first completed one counts.
    assert row.last_completed_build_id == builds["4"].id
    assert row.lease_until is None
    assert row.last_checked_at == NOW
    assert row.last_error is None and row.consecutive_errors == 0
    assert row.next_check_at == NOW + RUNNING_INTERVAL  # sooner: a build is running


def test_idle_instance_is_checked_again_later(db, fake_ci):
    from chalicelib.jobs.refresh import INTERVAL, RUNNING_INTERVAL

    [iid] = add_instances(["job-1"])
    fake_ci.builds["job-1"] = [build("2", "passed", 1), build("1", "failed", 10)]
    dispatch()
    row = instance(iid)
    assert row.next_check_at == NOW + INTERVAL
    assert INTERVAL > RUNNING_INTERVAL
    builds = builds_of(iid)
    assert row.latest_build_id == row.last_completed_build_id == builds["2"].id


@pytest.mark.parametrize("latest", ["running", "waiting"])
def test_pending_latest_build_shortens_interval(db, fake_ci, latest):
    from chalicelib.jobs.refresh import RUNNING_INTERVAL

    [iid] = add_instances(["job-1"])
    fake_ci.builds["job-1"] = [build("2", latest, 1), build("1", "passed", 10)]
    dispatch()
    assert instance(iid).next_check_at == NOW + RUNNING_INTERVAL


def test_no_completed_build_leaves_last_completed_empty(db, fake_ci):
    [iid] = add_instances(["job-1"])
    fake_ci.builds["job-1"] = [build("2", "running", 1), build("1", "aborted", 5)]
    dispatch()
    row = instance(iid)
    assert row.latest_build_id == builds_of(iid)["2"].id
    assert row.last_completed_build_id is None


def test_instance_without_builds(db, fake_ci):
    [iid] = add_instances(["job-1"])
    assert dispatch()["outcomes"] == {"updated": 1}
    row = instance(iid)
    assert row.latest_build_id is None and row.last_completed_build_id is None
    assert row.lease_until is None and row.next_check_at is not None


def test_completed_build_beyond_the_newest_ten_does_not_count(db, fake_ci):
    """The rule looks at the newest ten stored builds, not only at the last fetch."""
    [iid] = add_instances(["job-1"])
    fake_ci.builds["job-1"] = [build("old", "passed", 100)]
    dispatch()
    assert instance(iid).last_completed_build_id == builds_of(iid)["old"].id
    fake_ci.builds["job-1"] = [
        build(f"r{i}", "aborted" if i % 2 else "running", 50 - i) for i in range(10)
    ]
    dispatch(NOW + timedelta(hours=1))
    row = instance(iid)
    assert len(builds_of(iid)) == 11
    assert row.last_completed_build_id is None
    assert row.latest_build_id == builds_of(iid)["r9"].id


def test_newest_is_by_start_time_not_by_fetch_order(db, fake_ci):
    [iid] = add_instances(["job-1"])
    fake_ci.builds["job-1"] = [build("a", "passed", 30), build("b", "failed", 5)]
    dispatch()
    builds = builds_of(iid)
    assert instance(iid).latest_build_id == builds["b"].id
    assert instance(iid).last_completed_build_id == builds["b"].id


def test_second_refresh_upserts(db, fake_ci):
    [iid] = add_instances(["job-1"])
    fake_ci.builds["job-1"] = [build("2", "running", 1), build("1", "passed", 10)]
    dispatch()
    first = builds_of(iid)
    assert instance(iid).last_completed_build_id == first["1"].id

    fake_ci.builds["job-1"] = [
        build("3", "running", 0.5),
        build("2", "failed", 1),
        build("1", "passed", 10),
    ]
    summary = dispatch(NOW + timedelta(minutes=2))  # due again: a build was running
    assert summary["claimed"] == 1
    second = builds_of(iid)
    assert set(second) == {"1", "2", "3"}
    assert build_count() == 3
    assert second["2"].status == "failed"  # status updated in place
    assert second["2"].id == first["2"].id  # same row
    assert second["2"].finished_at is not None
    row = instance(iid)
    assert row.latest_build_id == second["3"].id
    assert row.last_completed_build_id == second["2"].id


def test_same_builds_twice_create_no_duplicates(db, fake_ci):
    [iid] = add_instances(["job-1"])
    fake_ci.builds["job-1"] = [build(str(i), "passed", i) for i in range(1, 6)]
    dispatch()
    ids = {k: b.id for k, b in builds_of(iid).items()}
    dispatch(NOW + timedelta(minutes=10))
    assert {k: b.id for k, b in builds_of(iid).items()} == ids
    assert build_count() == 5


def test_not_modified_keeps_builds_and_etag(db, fake_ci):
    from chalicelib.jobs import refresh

    [iid] = add_instances(["job-1"])
    fake_ci.builds["job-1"] = [build("1", "passed", 5)]
    fake_ci.etags["job-1"] = 'W/"v1"'
    dispatch()
    assert instance(iid).etag == 'W/"v1"'
    fake_ci.not_modified.add("job-1")
    later = NOW + timedelta(minutes=10)
    assert refresh.process_batch([iid], now=later) == {"unchanged": 1}
    assert fake_ci.calls[-1][2] == 'W/"v1"'  # the adapter saw the stored etag
    row = instance(iid)
    assert row.etag == 'W/"v1"'
    assert row.last_checked_at == later
    assert row.next_check_at == later + refresh.INTERVAL
    assert set(builds_of(iid)) == {"1"}


# --- errors ------------------------------------------------------------------------------


def test_ci_error_backs_off_and_others_are_refreshed(db, fake_ci):
    from chalicelib.jobs.refresh import INTERVAL

    bad, good = add_instances(["broken", "fine"])
    fake_ci.errors["broken"] = CIError("HTTP 502 from Jenkins")
    fake_ci.builds["fine"] = [build("1", "passed", 3)]
    summary = dispatch()
    assert summary["messages"] == 1  # same host: one batch
    assert summary["outcomes"] == {"error": 1, "updated": 1}
    row = instance(bad)
    assert row.last_error == "HTTP 502 from Jenkins"
    assert row.consecutive_errors == 1
    assert row.lease_until is None
    assert row.last_checked_at == NOW
    assert NOW + INTERVAL <= row.next_check_at <= NOW + INTERVAL * 1.2
    assert builds_of(bad) == {}
    assert set(builds_of(good)) == {"1"}
    assert instance(good).last_error is None

    # Failing again doubles the wait.
    dispatch(row.next_check_at)
    row = instance(bad)
    assert row.consecutive_errors == 2
    checked = row.last_checked_at
    assert checked + 2 * INTERVAL <= row.next_check_at <= checked + 2 * INTERVAL * 1.2

    # Recovery clears the error state.
    del fake_ci.errors["broken"]
    fake_ci.builds["broken"] = [build("9", "failed", 1)]
    dispatch(row.next_check_at)
    row = instance(bad)
    assert row.consecutive_errors == 0 and row.last_error is None
    assert row.last_completed_build_id == builds_of(bad)["9"].id


def test_backoff_is_capped(db, fake_ci):
    from chalicelib.jobs.refresh import MAX_BACKOFF

    [iid] = add_instances(["broken"])
    fake_ci.errors["broken"] = CIError("down")
    when = NOW
    for _ in range(12):
        dispatch(when)
        when = instance(iid).next_check_at
    row = instance(iid)
    assert row.consecutive_errors == 12
    assert row.next_check_at - row.last_checked_at <= MAX_BACKOFF * 1.2


def test_retry_after_is_honoured(db, fake_ci):
    [iid] = add_instances(["limited"])
    fake_ci.errors["limited"] = CIError("rate limited", retry_after=3600)
    dispatch()
    assert instance(iid).next_check_at >= NOW + timedelta(hours=1)


def test_unknown_service_type_records_an_error(db, fake_ci):
    bad = add_instances(["job-x"], url="https://mystery.example", service_type="mystery")[0]
    good = add_instances(["job-1"])[0]
    fake_ci.builds["job-1"] = [build("1", "passed", 1)]
    summary = dispatch()
    assert summary["outcomes"] == {"error": 1, "updated": 1}
    row = instance(bad)
    assert "mystery" in row.last_error
    assert row.consecutive_errors == 1
    assert row.lease_until is None
    assert set(builds_of(good)) == {"1"}


def test_unexpected_adapter_failure_does_not_stop_the_batch(db, fake_ci):
    from chalicelib.jobs import refresh

    bad, good = add_instances(["buggy", "fine"])
    fake_ci.errors["buggy"] = KeyError("adapter bug")
    fake_ci.builds["fine"] = [build("1", "passed", 1)]
    assert refresh.process_batch([bad, good], now=NOW) == {"failed": 1, "updated": 1}
    assert set(builds_of(good)) == {"1"}


def test_deleted_instance_is_missing(db, fake_ci):
    from chalicelib.jobs import refresh

    assert refresh.process_batch([987654], now=NOW) == {"missing": 1}


# --- claiming ----------------------------------------------------------------------------


def test_leased_instances_are_not_claimed_twice(db, fake_ci):
    from chalicelib.db import session_scope
    from chalicelib.jobs import refresh

    ids = add_instances(["a", "b"])
    with session_scope() as s:
        first = refresh.claim_due(s, NOW)
    assert sorted(i for i, _ in first) == sorted(ids)
    assert {url for _, url in first} == {CI_A}
    with session_scope() as s:
        assert refresh.claim_due(s, NOW + timedelta(minutes=1)) == []
    assert dispatch(NOW + timedelta(minutes=1))["claimed"] == 0
    assert all(instance(i).lease_until == NOW + refresh.LEASE for i in ids)
    # A lease that ran out (a lost message) is claimed again.
    with session_scope() as s:
        again = refresh.claim_due(s, NOW + refresh.LEASE + timedelta(seconds=1))
    assert sorted(i for i, _ in again) == sorted(ids)


def test_overlapping_claims_skip_each_others_rows(db, fake_ci):
    from chalicelib.db import get_sessionmaker
    from chalicelib.jobs import refresh

    ids = add_instances(["a", "b", "c"])
    one, two = get_sessionmaker()(), get_sessionmaker()()
    try:
        if not refresh._is_postgres(one):
            pytest.skip("row locks need PostgreSQL")
        first = refresh.claim_due(one, NOW)  # not committed yet: rows stay locked
        second = refresh.claim_due(two, NOW)
        assert sorted(i for i, _ in first) == sorted(ids)
        assert second == []
        one.commit()
        two.commit()
    finally:
        one.close()
        two.close()


def test_not_due_managed_and_blocked_instances_are_skipped(db, fake_ci):
    from chalicelib.db import session_scope
    from chalicelib.jobs import refresh
    from chalicelib.models import TestingService

    [later] = add_instances(["later"], next_check_at=NOW + timedelta(minutes=1))
    add_instances(["managed"], managed=True)
    add_instances(["blocked"], url=CI_B)
    with session_scope() as s:
        s.query(TestingService).filter_by(url=CI_B).update(
            {"blocked_until": NOW + timedelta(hours=1)}
        )
    [due] = add_instances(["due"], next_check_at=NOW - timedelta(seconds=1))
    with session_scope() as s:
        claimed = [i for i, _ in refresh.claim_due(s, NOW)]
    assert claimed == [due]
    with session_scope() as s:
        claimed = {i for i, _ in refresh.claim_due(s, NOW + timedelta(minutes=2))}
    assert claimed == {later}


def test_claim_limit(db, fake_ci):
    from chalicelib.db import session_scope
    from chalicelib.jobs import refresh

    ids = add_instances([f"j{i}" for i in range(5)])
    with session_scope() as s:
        assert len(refresh.claim_due(s, NOW, limit=2)) == 2
    with session_scope() as s:
        assert len(refresh.claim_due(s, NOW, limit=10)) == 3
    assert all(instance(i).lease_until is not None for i in ids)


def test_build_messages_groups_by_host():
    from chalicelib.jobs.refresh import INSTANCES_PER_MESSAGE, MESSAGE_VERSION, build_messages

    rows = [(i, CI_A) for i in range(30)] + [
        (100, CI_B),
        (101, CI_B + "/other"),
        (200, "https://ci-a.example/second"),
    ]
    messages = build_messages(rows)
    assert all(m["v"] == MESSAGE_VERSION for m in messages)
    assert all(len(m["instances"]) <= INSTANCES_PER_MESSAGE for m in messages)
    by_host: dict[str, list[int]] = {}
    for m in messages:
        by_host.setdefault(m["host"], []).extend(m["instances"])
    assert sorted(by_host["ci-a.example"]) == [*range(30), 200]
    assert sorted(by_host["ci-b.example"]) == [100, 101]
    assert len(messages) == 3


# --- SQS -----------------------------------------------------------------------------------


@pytest.fixture
def queue(monkeypatch):
    from moto import mock_aws

    with mock_aws():
        import boto3

        sqs = boto3.client("sqs", region_name="eu-west-1")
        url = sqs.create_queue(QueueName="lifemonitor-refresh")["QueueUrl"]
        monkeypatch.setenv("LM_REFRESH_QUEUE_URL", url)
        yield sqs, url


def receive_all(sqs, url) -> list[dict]:
    messages = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get(
            "Messages", []
        )
        if not got:
            return messages
        messages.extend(got)


def sqs_event(client, messages: list[dict]) -> dict:
    """A Lambda SQS event for these messages, each with its own messageId."""
    event = client.events.generate_sqs_event(
        [m["Body"] for m in messages], queue_name="lifemonitor-refresh"
    )
    for record, message in zip(event["Records"], messages, strict=True):
        record["messageId"] = message["MessageId"]
    return event


def raw(body: str, message_id: str) -> dict:
    return {"Body": body, "MessageId": message_id}


def test_dispatch_sends_batches_grouped_by_host(db, fake_ci, queue):
    sqs, url = queue
    a = add_instances([f"a{i}" for i in range(20)])
    a += add_instances([f"a-second{i}" for i in range(10)], url="https://ci-a.example/second")
    b = add_instances(["b0", "b1"], url=CI_B)
    summary = dispatch()
    assert summary == {"mode": "sqs", "claimed": 32, "messages": 3, "sent": 3}
    assert fake_ci.calls == []  # nothing refreshed inline
    bodies = [json.loads(m["Body"]) for m in receive_all(sqs, url)]
    assert len(bodies) == 3
    assert all(body["v"] == 1 and len(body["instances"]) <= 25 for body in bodies)
    by_host: dict[str, list[int]] = {}
    for body in bodies:
        by_host.setdefault(body["host"], []).extend(body["instances"])
    assert sorted(by_host["ci-a.example"]) == sorted(a)
    assert sorted(by_host["ci-b.example"]) == sorted(b)
    assert sorted(len(body["instances"]) for body in bodies) == [2, 5, 25]
    # Claimed (leased) but not yet refreshed; a second run sends nothing.
    assert all(instance(i).lease_until is not None for i in a + b)
    assert dispatch(NOW + timedelta(minutes=1))["claimed"] == 0
    assert receive_all(sqs, url) == []


def test_worker_lambda_processes_queued_batches(client, fake_ci, queue):
    sqs, url = queue
    ids = add_instances(["x", "y"]) + add_instances(["z"], url=CI_B)
    for resource in ("x", "y", "z"):
        fake_ci.builds[resource] = [
            build(f"{resource}-2", "running", 1),
            build(f"{resource}-1", "passed", 9),
        ]
    assert dispatch()["sent"] == 2
    messages = receive_all(sqs, url)
    result = client.lambda_.invoke("worker", sqs_event(client, messages))
    assert result.payload == {"batchItemFailures": []}
    for iid in ids:
        builds = builds_of(iid)
        assert len(builds) == 2
        row = instance(iid)
        assert row.lease_until is None
        assert row.last_completed_build_id == next(
            b.id for k, b in builds.items() if k.endswith("-1")
        )


def test_refresh_lambda_dispatches_to_the_queue(client, fake_ci, queue):
    sqs, url = queue
    add_instances(["x"])
    result = client.lambda_.invoke(
        "refresh",
        client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        ),
    )
    assert result.payload["mode"] == "sqs"
    assert result.payload["sent"] == 1
    assert len(receive_all(sqs, url)) == 1


def test_poison_messages_are_reported_and_good_ones_processed(client, fake_ci):
    [iid] = add_instances(["x"])
    fake_ci.builds["x"] = [build("1", "passed", 1)]
    good = json.dumps({"v": 1, "host": "ci-a.example", "instances": [iid]})
    messages = [
        raw("not json {", "bad-json"),
        raw(good, "good"),
        raw(json.dumps({"v": 99, "instances": [iid]}), "wrong-version"),
        raw(json.dumps({"v": 1}), "no-instances"),
        raw(json.dumps({"v": 1, "instances": ["x"]}), "bad-id"),
        raw(json.dumps([1, 2]), "not-an-object"),
    ]
    result = client.lambda_.invoke("worker", sqs_event(client, messages))
    failed = [f["itemIdentifier"] for f in result.payload["batchItemFailures"]]
    assert sorted(failed) == sorted(
        ["bad-json", "wrong-version", "no-instances", "bad-id", "not-an-object"]
    )
    assert set(builds_of(iid)) == {"1"}


def test_handle_sqs_records_directly(db, fake_ci):
    from chalicelib.jobs import refresh

    [iid] = add_instances(["x"])
    fake_ci.builds["x"] = [build("1", "failed", 1)]
    records = [
        {"messageId": "m1", "body": json.dumps({"v": 1, "instances": [iid]})},
        {"messageId": "m2", "body": ""},
    ]
    assert refresh.handle_sqs_records(iter(records)) == {
        "batchItemFailures": [{"itemIdentifier": "m2"}]
    }
    assert instance(iid).last_completed_build_id == builds_of(iid)["1"].id


def test_duplicate_delivery_is_idempotent(client, fake_ci):
    from chalicelib.db import session_scope
    from chalicelib.models import Build

    ids = add_instances(["x", "y"])
    fake_ci.builds["x"] = [build("x2", "running", 1), build("x1", "passed", 5)]
    fake_ci.builds["y"] = [build("y1", "failed", 2)]
    body = json.dumps({"v": 1, "host": "ci-a.example", "instances": ids})
    twice = [raw(body, "m1"), raw(body, "m1-redelivered")]
    for _ in range(2):  # in one batch, then once more in another
        result = client.lambda_.invoke("worker", sqs_event(client, twice))
        assert result.payload == {"batchItemFailures": []}
    with session_scope() as s:
        rows = [(b.instance_id, b.build_id) for b in s.query(Build)]
    assert sorted(rows) == sorted([(ids[0], "x1"), (ids[0], "x2"), (ids[1], "y1")])
    assert instance(ids[0]).latest_build_id == builds_of(ids[0])["x2"].id


# --- grouped writes ----------------------------------------------------------------------


def _postgres_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("set-based group writes are Postgres-only (the suite runs on SQLite)")


def test_a_group_is_written_in_four_statements(db, fake_ci):
    """However many instances arrive together, phase 3 locks them, upserts every build,
    reads the new pointers and updates every instance: four statements, one transaction
    (plus the stored statuses' upkeep, a fixed number too)."""
    _postgres_only(db)
    from sqlalchemy import event

    from chalicelib.db import get_engine
    from chalicelib.jobs import refresh

    ids = add_instances([f"job-{n}" for n in range(40)], etag="old")
    fetched = {
        i: refresh.Fetched(
            observed_at=NOW,
            result=FetchResult(
                builds=[build(f"{n}-2", "running", 1), build(f"{n}-1", "failed", 10)],
                etag=f"e{n}",
            ),
        )
        for n, i in enumerate(ids[:37])
    }
    fetched[ids[37]] = refresh.Fetched(observed_at=NOW, error=CIError("CI down"))
    fetched[ids[38]] = refresh.Fetched(
        observed_at=NOW, result=FetchResult(builds=[], etag="old", not_modified=True)
    )
    fetched[ids[39]] = refresh.Fetched(observed_at=NOW, result=FetchResult(builds=[]))
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement.split()[0].upper())

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        outcomes = refresh.write_group([*fetched.items(), (987654, fetched[ids[0]])], NOW)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert seen[:4] == ["SELECT", "INSERT", "SELECT", "UPDATE"]
    # Then the stored statuses (status_upkeep): lock the versions, read their instances,
    # write the suites, versions and workflows whose status changed — still a fixed count;
    # then the transition check (services/transitions.py): one read, and one update that
    # sets the baseline of every instance's first completed build.
    assert seen[4:6] == ["SELECT", "SELECT"]
    assert seen[-2:] == ["SELECT", "UPDATE"]
    assert set(seen[6:-2]) <= {"UPDATE"} and len(seen) <= 11, seen
    by_id = {o.instance_id: o for o in outcomes}
    assert {by_id[i].outcome for i in ids[:37]} == {"updated"}
    assert by_id[ids[37]].outcome == "error" and by_id[ids[37]].error == "CI down"
    assert by_id[ids[38]].outcome == "unchanged"
    assert by_id[ids[39]].outcome == "updated"
    assert by_id[987654].outcome == "missing"
    assert build_count() == 74
    for n, i in enumerate(ids[:37]):
        row, builds = instance(i), builds_of(i)
        assert row.latest_build_id == builds[f"{n}-2"].id
        assert row.last_completed_build_id == builds[f"{n}-1"].id
        assert row.etag == f"e{n}" and row.last_error is None and row.lease_until is None
        assert row.next_check_at == NOW + refresh.RUNNING_INTERVAL
        assert row.last_checked_at == NOW
    failed = instance(ids[37])
    assert failed.last_error == "CI down" and failed.consecutive_errors == 1
    assert failed.etag == "old" and failed.next_check_at >= NOW + refresh.INTERVAL
    unchanged = instance(ids[38])
    assert unchanged.etag == "old" and unchanged.next_check_at == NOW + refresh.INTERVAL
    empty = instance(ids[39])
    assert empty.latest_build_id is None and empty.last_completed_build_id is None


def test_a_bad_build_fails_its_own_instance_only(db, fake_ci):
    """A row the database refuses (a build id longer than the column) fails the group's
    transaction; the group is written again one by one, so only that instance fails."""
    _postgres_only(db)
    from chalicelib.jobs import refresh

    bad, *good = add_instances(["bad", "g1", "g2"])
    fake_ci.builds["bad"] = [build("x" * 300, "passed", 1)]
    for r in ("g1", "g2"):
        fake_ci.builds[r] = [build("1", "passed", 1)]
    outcomes = {o.instance_id: o for o in refresh.run_refresh([bad, *good], now=NOW)}
    assert outcomes[bad].outcome == "failed"
    assert "internal error" in outcomes[bad].error
    assert all(outcomes[i].outcome == "updated" for i in good)
    assert all(set(builds_of(i)) == {"1"} for i in good)
    assert builds_of(bad) == {}
    assert instance(bad).last_error.startswith("internal error while refreshing")


def test_progress_counts_every_instance_once(db, fake_ci):
    from chalicelib.jobs import refresh

    ids = add_instances([f"job-{n}" for n in range(12)])
    for n in range(12):
        fake_ci.builds[f"job-{n}"] = [build("1", "passed", 1)]
    calls = []
    refresh.run_refresh([*ids, 987654], now=NOW, concurrency=4, progress=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == list(range(1, 14))
    assert {c[1] for c in calls} == {13}
    assert {c[2].instance_id for c in calls} == {*ids, 987654}


@pytest.fixture
def embedded_sqlite(monkeypatch, tmp_path):
    """The embedded default of `make run`: a fresh SQLite database, migrated."""
    from chalicelib import migrate
    from chalicelib.db import dispose_engines

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'embedded.db'}")
    dispose_engines()
    migrate.upgrade("head")
    yield
    dispose_engines()


def test_refresh_on_the_embedded_sqlite_database(embedded_sqlite, fake_ci):
    """The per-instance ORM path of the embedded default: builds, pointers, errors, 304s
    and a second refresh that upserts."""
    from chalicelib.jobs import refresh

    ok, broken, same = add_instances(["ok", "broken", "same"], etag="e0")
    fake_ci.builds["ok"] = [build("2", "running", 1), build("1", "passed", 10)]
    fake_ci.errors["broken"] = CIError("CI down")
    fake_ci.not_modified.add("same")
    outcomes = refresh.process_batch([ok, broken, same], now=NOW)
    assert outcomes == {"updated": 1, "error": 1, "unchanged": 1}
    row, builds = instance(ok), builds_of(ok)
    assert row.latest_build_id == builds["2"].id
    assert row.last_completed_build_id == builds["1"].id
    assert row.next_check_at == NOW + refresh.RUNNING_INTERVAL
    assert instance(broken).last_error == "CI down"
    assert instance(same).next_check_at == NOW + refresh.INTERVAL
    fake_ci.builds["ok"] = [build("2", "failed", 1), build("1", "passed", 10)]
    assert refresh.process_batch([ok], now=NOW) == {"updated": 1}
    row, builds = instance(ok), builds_of(ok)
    assert builds["2"].status == "failed" and len(builds) == 2
    assert row.last_completed_build_id == builds["2"].id
    assert row.next_check_at == NOW + refresh.INTERVAL


def test_overlapping_groups_written_at_once_neither_deadlock_nor_duplicate(db, fake_ci):
    """Two workers write groups that share instances at the same moment: rows are locked
    in id order, so one waits for the other instead of deadlocking, and every build is
    stored once with the newer observation."""
    _postgres_only(db)
    import threading

    from chalicelib.jobs import refresh

    ids = add_instances([f"job-{n}" for n in range(12)])

    def fetched(minutes: float, status: str) -> refresh.Fetched:
        return refresh.Fetched(
            observed_at=at(minutes),
            result=FetchResult(builds=[build("2", status, 5), build("1", "passed", 10)]),
        )

    for round_ in range(3):
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []
        # Opposite orders of the same overlap: the worst case for lock ordering.
        older = [(i, fetched(2, "running")) for i in ids[:8]]
        newer = [(i, fetched(1, "failed")) for i in reversed(ids[4:])]

        def write(group, barrier=barrier, errors=errors):
            try:
                barrier.wait()
                outcomes = refresh.write_group(group, NOW)
                assert {o.outcome for o in outcomes} == {"updated"}, outcomes
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(g,)) for g in (older, newer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == [], f"round {round_}: {errors}"
    assert build_count() == 24
    for i in ids[4:]:
        assert builds_of(i)["2"].status == "failed"  # the newer observation, always
    for i in ids[:4]:
        assert builds_of(i)["2"].status == "running"
