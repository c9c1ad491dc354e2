"""Concurrent writes (issue 9, defect 5): every race ends in one row and a 2xx or 409,
never a 500 — each burst runs on PostgreSQL.

A burst is N processes, each with its own Chalice test client and database connection (as
N Lambda containers would be), released together by a barrier. Processes, not threads:
Chalice keeps the current request on the app object, so one app cannot serve two requests
at once in one process."""

from __future__ import annotations

import json
import multiprocessing
import uuid
import warnings

import pytest

from tests.conftest import ROOT
from tests.support import api_data

pytestmark = pytest.mark.slow


def _one_request(app, barrier, results, index, method, path, headers, body) -> None:
    from chalice.test import Client

    try:
        with Client(app, stage_name="test", project_dir=str(ROOT)) as client:
            barrier.wait(timeout=60)
            r = client.http.request(method, path, headers=headers, body=body)
            results.put((index, r.status_code, r.body.decode(errors="replace")[:500]))
    except BaseException as exc:  # reported, never a hang
        results.put((index, -1, repr(exc)))


def burst(app, requests: list[tuple[str, str, dict, bytes]]) -> list[tuple[int, str]]:
    """Send `requests` (method, path, headers, body) at once, one process each; returns
    (status, body) in the order given."""
    from chalicelib.db import dispose_engines

    dispose_engines()  # no pooled connection crosses the fork
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(requests))
    results = ctx.Queue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: fine here
        procs = [
            ctx.Process(target=_one_request, args=(app, barrier, results, i, *req))
            for i, req in enumerate(requests)
        ]
        for p in procs:
            p.start()
    out = dict()
    for _ in requests:
        index, status, body = results.get(timeout=180)
        out[index] = (status, body)
    for p in procs:
        p.join(timeout=60)
    return [out[i] for i in range(len(requests))]


def _submission(wf_uuid: str, version: str, name: str = "raced") -> bytes:
    return json.dumps(
        {
            "uuid": wf_uuid,
            "version": version,
            "name": name,
            "rocrate": api_data.b64(api_data.crate(name)),
        }
    ).encode()


def _count(sql: str, **params) -> int:
    from sqlalchemy import text

    from chalicelib.db import get_engine

    with get_engine().connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def _statuses(results) -> list[int]:
    assert all(status < 500 for status, _ in results), results
    return sorted(status for status, _ in results)


def test_same_uuid_and_version_twenty_times(postgres, chalice_app, api_key):
    wf = str(uuid.uuid4())
    headers = {"ApiKey": api_key, "Content-Type": "application/json"}
    results = burst(
        chalice_app, [("POST", "/users/current/workflows", headers, _submission(wf, "1"))] * 20
    )
    assert _statuses(results) == [201] + [409] * 19, results
    for status, body in results:
        if status == 409:
            assert json.loads(body)["status"] == 409  # problem+json
    assert _count("SELECT count(*) FROM workflows WHERE uuid = :u", u=wf) == 1
    assert _count("SELECT count(*) FROM workflow_versions") == 1


def test_same_async_registration_ten_times(postgres, chalice_app, api_key):
    """`async: true` without a queue runs each job inline: every caller gets its 302, one
    job completes, the others end in a 409 problem (never a 500), one workflow row."""
    wf = str(uuid.uuid4())
    headers = {"ApiKey": api_key, "Content-Type": "application/json"}
    body = json.dumps({**json.loads(_submission(wf, "1")), "async": True}).encode()
    results = burst(chalice_app, [("POST", "/users/current/workflows", headers, body)] * 10)
    assert _statuses(results) == [302] * 10, results
    outcomes = sorted(
        (json.loads(b)["status"], (json.loads(b).get("error") or {}).get("status"))
        for _, b in results
    )
    assert outcomes == [("completed", None)] + [("error", 409)] * 9, outcomes
    assert _count("SELECT count(*) FROM workflows WHERE uuid = :u", u=wf) == 1
    assert _count("SELECT count(*) FROM workflow_versions") == 1
    assert _count("SELECT count(*) FROM registration_jobs") == 10


def test_new_versions_of_one_new_workflow_at_once(postgres, chalice_app, api_key):
    wf = str(uuid.uuid4())
    headers = {"ApiKey": api_key, "Content-Type": "application/json"}
    results = burst(
        chalice_app,
        [("POST", "/users/current/workflows", headers, _submission(wf, str(v))) for v in range(8)],
    )
    # One creates the workflow; the others wait for it and add their version to it.
    assert _statuses(results) == [201] * 8, results
    assert _count("SELECT count(*) FROM workflows") == 1
    assert _count("SELECT count(DISTINCT version) FROM workflow_versions") == 8
    assert _count("SELECT count(*) FROM workflow_versions") == 8
    assert _count("SELECT count(*) FROM permissions") == 1


def _submit(client, api_key, wf: str, version: str) -> None:
    r = client.http.post(
        "/users/current/workflows",
        headers={"ApiKey": api_key, "Content-Type": "application/json"},
        body=_submission(wf, version),
    )
    assert r.status_code == 201, r.body


def test_concurrent_renames_to_one_label(postgres, client, chalice_app, api_key):
    wf = str(uuid.uuid4())
    for v in range(6):
        _submit(client, api_key, wf, str(v))
    headers = {"ApiKey": api_key, "Content-Type": "application/json"}
    results = burst(
        chalice_app,
        [
            (
                "PUT",
                f"/workflows/{wf}/versions/{v}",
                headers,
                json.dumps({"version": "same"}).encode(),
            )
            for v in range(6)
        ],
    )
    assert _statuses(results) == [204] + [409] * 5, results
    assert _count("SELECT count(*) FROM workflow_versions WHERE version = 'same'") == 1
    assert _count("SELECT count(*) FROM workflow_versions") == 6


def test_concurrent_renames_of_one_version(postgres, client, chalice_app, api_key):
    wf = str(uuid.uuid4())
    _submit(client, api_key, wf, "1")
    headers = {"ApiKey": api_key, "Content-Type": "application/json"}
    results = burst(
        chalice_app,
        [
            ("PUT", f"/workflows/{wf}/versions/1", headers, json.dumps({"name": f"n{i}"}).encode())
            for i in range(6)
        ]
        + [
            ("PUT", f"/workflows/{wf}", headers, json.dumps({"name": f"w{i}"}).encode())
            for i in range(6)
        ],
    )
    assert set(_statuses(results)) <= {204, 409}, results
    assert _count("SELECT count(*) FROM workflow_versions") == 1


def test_mixed_put_and_delete_of_instances(postgres, client, chalice_app, api_key):
    wf = str(uuid.uuid4())
    _submit(client, api_key, wf, "1")
    instance = api_data.instance_uuids(wf)[0]
    headers = {"ApiKey": api_key, "Content-Type": "application/json"}
    put = ("PUT", f"/instances/{instance}", headers, json.dumps({"name": "renamed"}).encode())
    delete = ("DELETE", f"/instances/{instance}", headers, b"")
    results = burst(chalice_app, [put, delete] * 5)
    # Each request is applied, finds the instance gone (404), or lost the race (409).
    assert set(_statuses(results)) <= {204, 404, 409}, results
    assert 204 in _statuses(results)
    assert _count("SELECT count(*) FROM test_instances") == 0
    from chalicelib.db import session_scope
    from chalicelib.services import status_upkeep

    with session_scope() as s:
        assert status_upkeep.mismatches(s) == []


def test_mixed_put_and_delete_of_workflows(postgres, client, chalice_app, api_key):
    wf = str(uuid.uuid4())
    for v in ("1", "2"):
        _submit(client, api_key, wf, v)
    headers = {"ApiKey": api_key, "Content-Type": "application/json"}
    results = burst(
        chalice_app,
        [
            ("PUT", f"/workflows/{wf}", headers, json.dumps({"name": "x"}).encode()),
            ("PUT", f"/workflows/{wf}/versions/1", headers, json.dumps({"name": "y"}).encode()),
            ("DELETE", f"/workflows/{wf}/versions/2", headers, b""),
            ("DELETE", f"/workflows/{wf}", headers, b""),
        ]
        * 3,
    )
    assert set(_statuses(results)) <= {204, 404, 409}, results
    assert _count("SELECT count(*) FROM workflows") == 0
