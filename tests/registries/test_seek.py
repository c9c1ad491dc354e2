"""The WorkflowHub (SEEK) client against the emulator: every call, the token choice, the
error mapping, and the SSRF guard. Runs on the real fixtures and on the generated
catalogue alike."""

from __future__ import annotations

import io
import uuid
import zipfile

import pytest

from chalicelib import errors
from chalicelib.registries import seek
from chalicelib.registries.seek import (
    RegistryForbiddenError,
    RegistryNotFoundError,
    RegistryResponseTooLargeError,
    RegistryUnavailableError,
    SeekClient,
    client_for,
)
from emulators.seek import WorkflowHubEmulator
from tests.conftest import SHARED_FIXTURES

JSONAPI = "application/vnd.api+json"
SECRET = "s3cr3t-user-token"


@pytest.fixture(scope="module", params=["real", "generated"])
def _server(request):
    real = request.param == "real"
    if real and not (SHARED_FIXTURES / "seek").is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED_FIXTURES} (set LM_SHARED_FIXTURES)")
    with WorkflowHubEmulator(use_real_fixtures=real) as emu:
        assert emu.has_real_fixtures == real
        yield emu


@pytest.fixture
def emu(_server, monkeypatch):
    """A reset emulator reachable through the SSRF guard (loopback allowed for tests)."""
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    _server.reset()
    return _server


@pytest.fixture
def owner(emu):
    """A token of the contributor of the private workflow."""
    emu.tokens[SECRET] = emu.workflow(emu.private_id).contributor
    return SECRET


def registry_for(url: str):
    from chalicelib.models import Registry

    # In memory, no database: client_for only reads `uri` and `service_token_key`.
    return Registry(
        name="WorkflowHub",
        client_name="wfhub",
        type="seek",
        uri=url,
        server_client_id="wfh-app",
        uuid=str(uuid.uuid4()),
    )


def only_request(emu):
    """The one request the emulator saw (no availability probe before it)."""
    assert len(emu.requests) == 1, [r.path for r in emu.requests]
    return emu.requests[0]


# -- calls ----------------------------------------------------------------------------------


def test_get_workflow(emu):
    wid = emu.public_id
    data = SeekClient(emu.url).get_workflow(wid)
    assert data["id"] == wid and data["type"] == "workflows"
    assert seek.workflow_uuid(data) == emu.uuid_of(wid)
    assert seek.workflow_title(data) == emu.workflow(wid).title
    assert seek.workflow_versions(data) == ["1"]
    assert seek.latest_version(data) == "1"
    assert seek.submitter_id(data) == emu.workflow(wid).contributor
    assert seek.project_ids(data) == emu.workflow(wid).projects
    # anonymous callers are not shown the policy
    assert seek.visibility(data) is None and seek.is_public(data) is None

    req = only_request(emu)
    assert req.path == f"/workflows/{wid}"
    assert req.query == {"format": ["json"]}
    assert req.headers["accept"] == JSONAPI
    assert req.headers["content-type"] == JSONAPI
    assert "authorization" not in req.headers


def test_get_workflow_version_and_policy_for_owner(emu, owner):
    client = SeekClient(emu.url, owner)
    data = client.get_workflow(emu.private_id, version=1)
    assert seek.visibility(data) == "no_access" and seek.is_public(data) is False
    assert emu.requests[0].query == {"format": ["json"], "version": ["1"]}
    assert emu.requests[0].headers["authorization"] == f"Bearer {owner}"
    public = client.get_workflow(emu.public_id, version="latest")
    assert seek.visibility(public) == "download" and seek.is_public(public) is True
    assert emu.requests[1].query == {"format": ["json"]}


def test_list_workflows(emu, owner):
    listed = SeekClient(emu.url).list_workflows()
    assert [w["id"] for w in listed] == emu.public_ids()
    assert all(seek.workflow_title(w) for w in listed)
    assert only_request(emu).query == {"format": ["json"]}
    # the contributor also sees the private ones
    everything = SeekClient(emu.url, owner).list_workflows()
    assert {w["id"] for w in everything} == set(emu.workflows)


def test_current_user(emu, owner):
    person = SeekClient(emu.url, owner).current_user()
    assert person["id"] == emu.tokens[owner] == "2"
    assert person["attributes"]["title"] == "First User"
    assert person["attributes"]["mbox_sha1sum"]
    assert person["relationships"]["projects"]["data"][0]["type"] == "projects"
    req = only_request(emu)
    assert req.path == "/people/current" and req.query == {}
    assert SeekClient(emu.url).get_person(1)["attributes"]["title"] == "Admin User"


def test_current_user_without_user_is_forbidden(emu):
    with pytest.raises(RegistryForbiddenError, match="no user logged in"):
        SeekClient(emu.url).current_user()


def test_download_crate(emu):
    wid = emu.public_id
    content = SeekClient(emu.url).download_crate(wid, 1)
    assert content == emu.crate_bytes(wid, 1)
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        assert zf.testzip() is None
        assert any(n.startswith("ro-crate-metadata.json") for n in zf.namelist())
    req = only_request(emu)
    assert req.path == f"/workflows/{wid}/ro_crate"
    assert req.query == {"version": ["1"]}


def test_download_private_crate_with_token(emu, owner):
    content = SeekClient(emu.url, owner).download_crate(emu.private_id, "1")
    assert content == emu.crate_bytes(emu.private_id)


def test_crate_size_is_limited(emu):
    client = SeekClient(emu.url, max_crate_bytes=100)
    with pytest.raises(RegistryResponseTooLargeError, match="larger than 100 bytes") as exc:
        client.download_crate(emu.public_id, 1)
    assert exc.value.status == 422


def test_urls():
    client = SeekClient("https://workflowhub.eu/")
    assert client.workflow_url(21) == "https://workflowhub.eu/workflows/21"
    assert client.workflow_url("21", "latest") == "https://workflowhub.eu/workflows/21"
    assert client.workflow_url("21", 2) == "https://workflowhub.eu/workflows/21?version=2"
    assert client.crate_url(21, "1") == "https://workflowhub.eu/workflows/21/ro_crate?version=1"
    # identifiers stay one path segment
    assert client.workflow_url("1/../x") == "https://workflowhub.eu/workflows/1%2F..%2Fx"
    assert SECRET not in repr(SeekClient("https://workflowhub.eu", SECRET))


# -- token choice -----------------------------------------------------------------------------


def test_client_for_prefers_the_user_token(emu):
    from chalicelib.secrets import get_secrets

    registry = registry_for(emu.url)
    get_secrets().put(registry.service_token_key, "service-token")
    client = client_for(registry, "user-token")
    assert client.auth_source == "user"
    emu.tokens["user-token"] = 2
    client.get_workflow(emu.public_id)
    assert only_request(emu).headers["authorization"] == "Bearer user-token"


def test_client_for_uses_the_service_token(emu):
    from chalicelib.secrets import get_secrets

    registry = registry_for(emu.url)
    get_secrets().put(registry.service_token_key, "service-token")
    emu.tokens["service-token"] = 1  # the registry's admin account
    client = client_for(registry)
    assert client.auth_source == "service"
    # the service token reaches what anonymous LifeMonitor could not: private workflows
    data = client.get_workflow(emu.private_id)
    assert seek.workflow_uuid(data) == emu.uuid_of(emu.private_id)
    assert client.download_crate(emu.private_id, 1) == emu.crate_bytes(emu.private_id)
    assert {r.headers["authorization"] for r in emu.requests} == {"Bearer service-token"}


def test_client_for_falls_back_to_anonymous(emu):
    client = client_for(registry_for(emu.url), None)
    assert client.auth_source == "anonymous" and not client.authenticated
    client.get_workflow(emu.public_id)
    assert "authorization" not in only_request(emu).headers
    with pytest.raises(RegistryForbiddenError, match="anonymous credentials"):
        client.get_workflow(emu.private_id)


# -- errors -----------------------------------------------------------------------------------


def check_reason(exc: errors.LifeMonitorError, token: str | None = None) -> None:
    """One line, names the registry host, never the token."""
    text = str(exc)
    assert "127.0.0.1" in text
    assert "\n" not in text
    if token:
        assert token not in text and token not in repr(exc.extra_info)


def test_unknown_workflow_is_not_found(emu):
    with pytest.raises(RegistryNotFoundError) as exc:
        SeekClient(emu.url).get_workflow(999)
    assert isinstance(exc.value, errors.NotFoundError)
    assert exc.value.status == 404 and exc.value.title == "Resource not found"
    assert "Couldn't find Workflow" in str(exc.value)
    check_reason(exc.value)


def test_unknown_crate_is_rocrate_not_found(emu):
    with pytest.raises(RegistryNotFoundError) as exc:
        SeekClient(emu.url).download_crate(emu.public_id, 99)
    assert exc.value.status == 404 and exc.value.title == "RO-Crate not found"
    check_reason(exc.value)


def test_private_workflow_is_forbidden(emu):
    with pytest.raises(RegistryForbiddenError) as exc:
        SeekClient(emu.url).download_crate(emu.private_id, 1)
    assert isinstance(exc.value, errors.ForbiddenError) and exc.value.status == 403
    assert f"You may not download workflow:{emu.private_id}" in str(exc.value)
    check_reason(exc.value)


def test_unknown_token_is_forbidden(emu):
    with pytest.raises(RegistryForbiddenError) as exc:
        SeekClient(emu.url, SECRET).get_workflow(emu.public_id)  # not in emu.tokens: 401
    assert "(401" in str(exc.value)
    check_reason(exc.value, SECRET)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_statuses(emu, status):
    emu.fault(r"^/workflows$", status=status, body={"errors": [{"title": "nope"}]})
    with pytest.raises(RegistryForbiddenError):
        SeekClient(emu.url, SECRET).list_workflows()


@pytest.mark.parametrize("status", [500, 400, 406])
def test_other_statuses_are_unavailable(emu, status):
    emu.fault(r"^/workflows/", status=status, body={"errors": [{"title": "boom"}]})
    with pytest.raises(RegistryUnavailableError) as exc:
        SeekClient(emu.url, SECRET).get_workflow(emu.public_id)
    assert isinstance(exc.value, errors.ServiceUnavailableError) and exc.value.status == 503
    assert f"({status}" in str(exc.value)
    check_reason(exc.value, SECRET)
    assert len(emu.requests) == 1  # 500/4xx are not retried


def test_retries_transient_failures(emu):
    emu.fault(r"^/workflows/", status=503, times=1)
    data = SeekClient(emu.url).get_workflow(emu.public_id)
    assert data["id"] == emu.public_id
    assert [r.path for r in emu.requests] == [f"/workflows/{emu.public_id}"] * 2


def test_persistent_503_is_unavailable(emu):
    emu.fault(r"^/workflows/", status=503)
    with pytest.raises(RegistryUnavailableError, match=r"\(503"):
        SeekClient(emu.url, retries=1).get_workflow(emu.public_id)
    assert len(emu.requests) == 2


def test_timeout_is_unavailable(emu):
    emu.fault(r"^/workflows/", status=200, body={}, delay=1.0)
    client = SeekClient(emu.url, SECRET, timeout=(1, 0.2), retries=0)
    with pytest.raises(RegistryUnavailableError, match="timed out") as exc:
        client.get_workflow(emu.public_id)
    check_reason(exc.value, SECRET)


def test_dropped_connection_is_unavailable(emu):
    emu.fault(r"^/workflows/", drop=True)
    with pytest.raises(RegistryUnavailableError) as exc:
        SeekClient(emu.url, retries=0).download_crate(emu.public_id, 1)
    check_reason(exc.value)


def test_connection_refused_is_unavailable(emu):
    with pytest.raises(RegistryUnavailableError, match="not reachable") as exc:
        SeekClient("http://127.0.0.1:9", retries=0).list_workflows()
    check_reason(exc.value)


@pytest.mark.parametrize("body", ["<html>not json</html>", {"data": "x"}, ["not", "an object"]])
def test_malformed_json_is_unavailable(emu, body):
    emu.fault(r"^/workflows/", status=200, body=body)
    with pytest.raises(RegistryUnavailableError, match="malformed JSON:API") as exc:
        SeekClient(emu.url).get_workflow(emu.public_id)
    check_reason(exc.value)


def test_malformed_index_is_unavailable(emu):
    emu.fault(r"^/workflows$", status=200, body={"data": {"id": "1"}})
    with pytest.raises(RegistryUnavailableError, match="'data' is not a list"):
        SeekClient(emu.url).list_workflows()


def test_errors_render_as_problem_json(emu):
    from chalicelib.api.problems import from_error

    with pytest.raises(RegistryNotFoundError) as exc:
        SeekClient(emu.url).download_crate(emu.public_id, 99)
    response = from_error(exc.value, "/registries/current/workflows")
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.body["title"] == "RO-Crate not found"
    assert response.body["extra_info"] == {"registry": "127.0.0.1"}


# -- the SSRF guard ---------------------------------------------------------------------------


def test_refuses_loopback_registry_without_allow_private_urls(monkeypatch):
    # A fresh server (new port): the pooled keep-alive connections of other tests, made
    # while loopback was allowed, must not be what this test goes through.
    monkeypatch.delenv("ALLOW_PRIVATE_URLS", raising=False)
    with WorkflowHubEmulator(use_real_fixtures=False) as emu:
        client = SeekClient(emu.url, SECRET)
        for call in (
            client.list_workflows,
            lambda: client.get_workflow(emu.public_id),
            lambda: client.download_crate(emu.public_id, 1),
            client.current_user,
        ):
            with pytest.raises(RegistryUnavailableError, match="loopback") as exc:
                call()
            check_reason(exc.value, SECRET)
        assert emu.requests == []  # nothing reached the emulator
