"""WorkflowHub's real call sequence (contract §10) against the emulated WorkflowHub."""

from __future__ import annotations

import json

import pytest

from chalicelib.auth import scopes as S
from emulators.seek import WorkflowHubEmulator
from tests.api.helpers import assert_problem, form


@pytest.fixture(scope="module")
def workflowhub():
    with WorkflowHubEmulator() as emulator:
        yield emulator


@pytest.fixture
def wfh(workflowhub, monkeypatch):
    workflowhub.reset()
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")  # the emulator listens on loopback
    return workflowhub


@pytest.fixture
def wfh_registry(wfh, db):
    from chalicelib.db import session_scope
    from chalicelib.services import registries

    with session_scope() as s:
        return registries.add_registry(
            s,
            name="WorkflowHub",
            type="seek",
            client_id="app",
            client_secret="app-secret",
            api_url=wfh.url,
            client_name="wfhub",
        )


def _token(client, creds, scope=S.WORKFLOWHUB_REQUEST) -> dict:
    r = client.http.post(
        "/oauth2/token",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=form(
            client_id=creds.client_id,
            client_secret=creds.client_secret,
            grant_type="client_credentials",
            scope=scope,
        ),
    )
    assert r.status_code == 200, r.body
    return {
        "Authorization": f"Bearer {r.json_body['access_token']}",
        "Content-Type": "application/json",
    }


def test_workflowhub_sequence(client, wfh, wfh_registry):
    headers = _token(client, wfh_registry)
    wf_id = wfh.public_id
    wf_uuid = wfh.uuid_of(wf_id)

    # 2. Exists? 404 means "not yet registered".
    assert_problem(client.http.get(f"/workflows/{wf_uuid}/versions", headers=headers), 404)

    # 3. Submit by registry identifier; WorkflowHub's uuid is adopted.
    r = client.http.post(
        "/registries/current/workflows",
        headers=headers,
        body=json.dumps({"identifier": wf_id, "version": "1", "public": True}),
    )
    assert r.status_code == 201, r.body
    assert r.json_body["uuid"] == wf_uuid
    assert r.json_body["wf_version"] == "1"
    assert set(r.json_body) == {"uuid", "wf_version", "name", "meta"}
    assert wfh.requests_to(rf"/workflows/{wf_id}/ro_crate$")

    # A second submission of the same version is a conflict.
    r = client.http.post(
        "/registries/current/workflows",
        headers=headers,
        body=json.dumps({"identifier": wf_id, "version": "1"}),
    )
    assert_problem(r, 409)

    # 2 again: the versions list has it now.
    r = client.http.get(f"/workflows/{wf_uuid}/versions", headers=headers)
    assert r.status_code == 200
    assert [v["version"] for v in r.json_body["versions"]] == ["1"]

    # 5. The daily status sweep.
    r = client.http.get("/registries/current/workflows?status=true&versions=true", headers=headers)
    assert r.status_code == 200
    items = r.json_body["items"]
    assert [i["uuid"] for i in items] == [wf_uuid]
    version = items[0]["versions"][0]
    assert version["version"] == "1"
    assert version["status"]["aggregate_test_status"] in {
        "all_passing",
        "some_passing",
        "all_failing",
        "not_available",
    }

    # 4. Update by the registry (LifeMonitor only allowed it for public workflows).
    r = client.http.put(
        f"/workflows/{wf_uuid}/versions/1",
        headers=headers,
        body=json.dumps({"name": "Renamed by WorkflowHub", "version": "1"}),
    )
    assert r.status_code == 204, r.body
    r = client.http.get(f"/workflows/{wf_uuid}", headers=headers)
    assert r.json_body["name"] == "Renamed by WorkflowHub"
    assert r.json_body["registries"][0]["identifier"] == "wfhub"
    links = r.json_body["version"]["ro_crate"]["links"]
    assert links["registries"]["wfhub"].startswith(wfh.url)


def test_private_workflow_needs_the_registry_service_token(client, wfh, wfh_registry):
    from chalicelib.db import session_scope
    from chalicelib.models import Registry, Workflow
    from chalicelib.secrets import get_secrets

    headers = _token(client, wfh_registry)
    body = json.dumps({"identifier": wfh.private_id, "version": "1"})
    r = client.http.post("/registries/current/workflows", headers=headers, body=body)
    assert_problem(r, 403)
    with session_scope() as s:
        assert s.query(Workflow).count() == 0  # nothing written

    # A service token (an admin's, here) in the parameter store lets us read it.
    wfh.tokens["service-token"] = "1"
    with session_scope() as s:
        registry = s.query(Registry).one()
        get_secrets().put(registry.service_token_key, "service-token")
    r = client.http.post("/registries/current/workflows", headers=headers, body=body)
    assert r.status_code == 201, r.body
    assert r.json_body["uuid"] == wfh.uuid_of(wfh.private_id)
    # Private: anonymous callers may not read it; the registry may.
    assert_problem(client.http.get(f"/workflows/{r.json_body['uuid']}"), 403)
    assert client.http.get(f"/workflows/{r.json_body['uuid']}", headers=headers).status_code == 200


def test_registry_outage_is_a_503_and_writes_nothing(client, wfh, wfh_registry):
    from chalicelib.db import session_scope
    from chalicelib.models import Workflow

    headers = _token(client, wfh_registry)
    wfh.fault(r"^/workflows/", status=500, body={"errors": [{"title": "boom"}]})
    r = client.http.post(
        "/registries/current/workflows",
        headers=headers,
        body=json.dumps({"identifier": wfh.public_id, "version": "1"}),
    )
    assert_problem(r, 503)
    with session_scope() as s:
        assert s.query(Workflow).count() == 0


def test_unknown_registry_workflow_is_404(client, wfh, wfh_registry):
    headers = _token(client, wfh_registry)
    r = client.http.post(
        "/registries/current/workflows",
        headers=headers,
        body=json.dumps({"identifier": "999999", "version": "1"}),
    )
    assert_problem(r, 404)


def test_registry_refused_without_private_address_permission(
    client, wfh, wfh_registry, monkeypatch
):
    """Without ALLOW_PRIVATE_URLS the guard refuses the loopback registry: a clear error,
    not a fetch."""
    monkeypatch.delenv("ALLOW_PRIVATE_URLS")
    headers = _token(client, wfh_registry)
    r = client.http.post(
        "/registries/current/workflows",
        headers=headers,
        body=json.dumps({"identifier": wfh.public_id, "version": "1"}),
    )
    body = assert_problem(r, 503)
    assert "private" in body["detail"]
    assert not wfh.requests_to(r"/ro_crate")
