"""Stored aggregate statuses (issue 9, the registry sweep): every write path keeps them
equal to the rule (`chalicelib/status.py`) applied to what is stored."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.testing import BuildData, CIError, FetchResult

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
STATUSES = ("passed", "failed", "error", "aborted", "running", "waiting")


def _version(s, layout: list[int], name: str = "wf"):
    """A workflow with one version whose suites have `layout[i]` instances each, stored
    as a submission stores them (statuses included)."""
    from chalicelib.models import TestingService, TestInstance, TestSuite, Workflow, WorkflowVersion
    from chalicelib.services.status_upkeep import update_statuses

    service = s.query(TestingService).filter_by(url="https://ci.example").one_or_none()
    service = service or TestingService(type="jenkins", url="https://ci.example")
    workflow = Workflow(name=name, public=True)
    version = WorkflowVersion(workflow=workflow, version="1", name=name, crate_metadata={})
    s.add_all([workflow, version])
    instances = []
    for n, count in enumerate(layout):
        suite = TestSuite(workflow_version=version, name=f"s{n}")
        s.add(suite)
        for i in range(count):
            instance = TestInstance(
                suite=suite, name=f"i{n}.{i}", resource=f"job/{n}/{i}", testing_service=service
            )
            s.add(instance)
            instances.append(instance)
    s.flush()
    update_statuses(s, version_ids=[version.id], workflow_ids=[workflow.id])
    return workflow, version, instances


def _mismatches(s, version_ids=None) -> list[str]:
    from chalicelib.services.status_upkeep import mismatches

    s.expire_all()
    return mismatches(s, version_ids)


def _build(build_id: str, status: str, minutes_ago: int) -> BuildData:
    started = NOW - timedelta(minutes=minutes_ago)
    return BuildData(build_id=build_id, status=status, started_at=started, duration=60.0)


# One step: which instance, and either builds the CI reports (by the refresh's group write
# or by `store_builds`, as webhooks and tests do) or a CI error.
step = st.tuples(
    st.integers(min_value=0, max_value=20),
    st.sampled_from(["refresh", "store", "error"]),
    st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=15),  # CI build id (repeats update a build)
            st.sampled_from(STATUSES),
            st.integers(min_value=0, max_value=600),  # minutes ago
        ),
        max_size=4,
    ),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    layout=st.lists(st.integers(min_value=0, max_value=3), max_size=3),
    steps=st.lists(step, max_size=8),
)
def test_stored_status_equals_the_rule_after_any_build_sequence(session, layout, steps):
    from chalicelib.jobs import refresh

    _, version, instances = _version(session, layout)
    assert _mismatches(session, [version.id]) == []
    for n, how, builds in steps:
        if not instances:
            break
        instance = instances[n % len(instances)]
        reported = [_build(str(b), status, ago) for b, status, ago in builds]
        if how == "store":
            refresh.store_builds(session, instance, reported, observed_at=NOW)
        elif how == "error":
            refresh.apply(session, instance.id, refresh.Fetched(NOW, error=CIError("down")), NOW)
        else:
            fetched = refresh.Fetched(NOW, result=FetchResult(builds=reported))
            refresh.apply(session, instance.id, fetched, NOW)
        assert _mismatches(session, [version.id]) == [], (layout, steps)
    session.rollback()


def test_changes_of_suites_and_instances_keep_the_stored_status(client, api_key, session):
    """Instance added, renamed, deleted; suite renamed; newest version deleted."""
    import json

    from chalicelib.jobs.refresh import store_builds
    from chalicelib.models import TestInstance, TestSuite, Workflow
    from tests.support import api_data

    headers = {"ApiKey": api_key, "Content-Type": "application/json"}
    for v in ("1", "2"):
        body = {"uuid": "5c4c7a4e-0d4c-4c47-9a43-0b8b2d5d3d01", "version": v, "name": "w"}
        body["rocrate"] = api_data.b64(api_data.crate("w"))
        r = client.http.post("/users/current/workflows", headers=headers, body=json.dumps(body))
        assert r.status_code == 201, r.body
    assert _mismatches(session) == []
    wf = session.query(Workflow).one()
    assert wf.status == "not_available"
    instance = session.query(TestInstance).order_by(TestInstance.id.desc()).first()
    store_builds(session, instance, [_build("1", "failed", 5)])
    session.commit()
    wf = session.query(Workflow).one()
    assert (wf.status, _mismatches(session)) == ("all_failing", [])

    suite = session.get(TestSuite, instance.suite_id)
    r = client.http.post(
        f"/suites/{suite.uuid}/instances",
        headers=headers,
        body=json.dumps(
            {"service": {"type": "jenkins", "url": "https://ci.example"}, "resource": "job/x"}
        ),
    )
    assert r.status_code in (200, 201), r.body
    assert _mismatches(session) == []  # the new instance has no build: named in no reason
    new = session.query(TestInstance).order_by(TestInstance.id.desc()).first()
    for method, path, body in [
        ("PUT", f"/instances/{new.uuid}", {"name": "renamed"}),
        ("PUT", f"/suites/{suite.uuid}", {"name": "renamed suite"}),
        ("DELETE", f"/instances/{instance.uuid}", None),
    ]:
        r = client.http.request(
            method, path, headers=headers, body=json.dumps(body) if body else b""
        )
        assert r.status_code == 204, (path, r.body)
        assert _mismatches(session) == [], path
    session.expire_all()
    suite = session.get(TestSuite, suite.id)
    assert suite.status == "not_available" and "renamed" in (suite.status_reason or "")
    r = client.http.delete(
        "/workflows/5c4c7a4e-0d4c-4c47-9a43-0b8b2d5d3d01/versions/2", headers=headers
    )
    assert r.status_code == 204, r.body
    assert _mismatches(session) == []


def test_concurrent_group_writes_to_one_version(db):
    """Two refresh groups writing different instances of one version at once: the second
    recomputes from what the first committed (the versions are locked first)."""
    from chalicelib.db import get_engine, session_scope
    from chalicelib.jobs import refresh

    if get_engine().dialect.name != "postgresql":
        pytest.skip("row locks: PostgreSQL")
    with session_scope() as s:
        _, version, instances = _version(s, [4, 4])
        ids, vid = [i.id for i in instances], version.id
    for rounds in range(5):
        barrier = threading.Barrier(2)
        errors = []

        def write(part, status, barrier=barrier, errors=errors, rounds=rounds):
            try:
                barrier.wait(timeout=30)
                fetched = refresh.Fetched(
                    NOW, result=FetchResult(builds=[_build(f"r{rounds}", status, 0)])
                )
                refresh.write_group([(i, fetched) for i in part], NOW)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        statuses = ("passed", "failed") if rounds % 2 else ("failed", "passed")
        threads = [
            threading.Thread(target=write, args=(ids[:4], statuses[0])),
            threading.Thread(target=write, args=(ids[4:], statuses[1])),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with session_scope() as s:
            assert _mismatches(s, [vid]) == []
            from chalicelib.models import WorkflowVersion

            assert s.get(WorkflowVersion, vid).status == "some_passing"


def test_crate_limits_answer_413_and_write_nothing(client, api_key, monkeypatch):
    import json

    from tests.api.helpers import assert_problem
    from tests.support import api_data

    monkeypatch.setenv("LM_MAX_SUITES_PER_CRATE", "2")
    headers = {"ApiKey": api_key, "Content-Type": "application/json"}
    from emulators.crates import with_suites, wtroc_metadata, zip_crate

    crate = zip_crate(with_suites(wtroc_metadata(name="big"), 3))
    body = {"version": "1", "name": "big", "rocrate": api_data.b64(crate)}
    before = api_data.row_counts()
    r = client.http.post("/users/current/workflows", headers=headers, body=json.dumps(body))
    problem = assert_problem(r, 413)
    assert "3 test suites" in problem["detail"] and problem["extra_info"]["limit"] == 2
    assert api_data.row_counts() == before
    monkeypatch.setenv("LM_MAX_SUITES_PER_CRATE", "3")
    r = client.http.post("/users/current/workflows", headers=headers, body=json.dumps(body))
    assert r.status_code == 201, r.body
