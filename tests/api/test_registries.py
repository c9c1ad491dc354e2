"""GET /registries, /registries/{uuid} and /registries/current (contract §1.4, §1.5)."""

from __future__ import annotations

import time

import pytest

from tests.api.helpers import assert_problem, form

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ITEM_KEYS = {"uuid", "identifier", "uri", "type", "name"}
META_KEYS = {"api_version", "base_url", "resource", "created", "modified"}


def token_for(client, client_id: str, client_secret: str, scope: str) -> str:
    r = client.http.post(
        "/oauth2/token",
        headers=FORM,
        body=form(
            client_id=client_id,
            client_secret=client_secret,
            grant_type="client_credentials",
            scope=scope,
        ),
    )
    assert r.status_code == 200, r.body
    return r.json_body["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def second_registry(db):
    from chalicelib.db import session_scope
    from chalicelib.services import registries

    with session_scope() as s:
        return registries.add_registry(
            s,
            name="Another Hub",
            type="seek",
            client_id="other-app",
            client_secret="other-secret",
            api_url="https://another.example/",
        )


def test_list_envelope(client, registry):
    r = client.http.get("/registries")
    assert r.status_code == 200, r.body
    body = r.json_body
    assert set(body) == {"items", "meta", "links"}
    assert set(body["meta"]) == META_KEYS
    assert body["meta"] == {
        "api_version": "0.15.0",
        "base_url": "http://lm.test",
        "resource": "/registries",
        "created": None,
        "modified": None,
    }
    assert body["links"] == {"self": "http://lm.test/registries"}
    [item] = body["items"]
    assert set(item) == ITEM_KEYS
    assert item == {
        "uuid": registry.registry.uuid,
        "identifier": "workflow_hub",
        "uri": "https://workflowhub.example",
        "type": "seek",
        "name": "WorkflowHub",
    }


def test_list_is_sorted_by_name_and_items_have_no_meta(client, registry, second_registry):
    body = client.http.get("/registries").json_body
    assert [i["name"] for i in body["items"]] == ["Another Hub", "WorkflowHub"]
    for item in body["items"]:
        assert set(item) == ITEM_KEYS
    assert body["items"][0]["uri"] == "https://another.example"  # trailing slash dropped
    assert body["items"][0]["identifier"] == "another_hub"


def test_list_meta_resource_keeps_query(client, registry):
    body = client.http.get("/registries?unknown=param").json_body
    assert body["meta"]["resource"] == "/registries?unknown=param"
    assert body["links"]["self"] == "http://lm.test/registries?unknown=param"


def test_list_base_url_follows_external_server_url(client, registry, monkeypatch):
    monkeypatch.setenv("EXTERNAL_SERVER_URL", "https://api.example.org")
    body = client.http.get("/registries").json_body
    assert body["meta"]["base_url"] == "https://api.example.org"
    assert body["links"]["self"] == "https://api.example.org/registries"


def test_list_never_shows_credentials(client, registry):
    text = client.http.get("/registries").body.decode()
    assert registry.client_id not in text
    assert registry.client_secret not in text
    assert "wfh-secret" not in text and "wfh-app" not in text


def test_get_one(client, registry):
    uuid = registry.registry.uuid
    r = client.http.get(f"/registries/{uuid}")
    assert r.status_code == 200, r.body
    body = r.json_body
    assert set(body) == ITEM_KEYS | {"meta", "links"}
    assert body["uuid"] == uuid
    assert body["name"] == "WorkflowHub"
    assert body["identifier"] == "workflow_hub"
    assert body["type"] == "seek"
    assert body["uri"] == "https://workflowhub.example"
    assert body["links"] == {"self": f"http://lm.test/registries/{uuid}"}
    meta = body["meta"]
    assert set(meta) == META_KEYS
    assert meta["resource"] == f"/registries/{uuid}"
    assert meta["api_version"] == "0.15.0"
    for key in ("created", "modified"):
        assert isinstance(meta[key], float)
        assert abs(meta[key] - time.time()) < 120
    assert meta["created"] == pytest.approx(registry.registry.created.timestamp())
    assert meta["modified"] >= meta["created"]


def test_get_unknown_uuid_is_404(client, registry):
    r = client.http.get("/registries/00000000-0000-4000-8000-000000000000")
    body = assert_problem(r, 404)
    assert body["title"] == "Resource not found"
    assert body["extra_info"]["resource_type"] == "registry"
    assert body["extra_info"]["resource_identifier"] == "00000000-0000-4000-8000-000000000000"
    assert body["instance"] == "http://lm.test/registries/00000000-0000-4000-8000-000000000000"


def test_get_by_name_is_not_a_lookup(client, registry):
    """The path parameter is a uuid; names and identifiers are not looked up."""
    assert_problem(client.http.get("/registries/WorkflowHub"), 404)
    assert_problem(client.http.get("/registries/workflow_hub"), 404)


# --- /registries/current -----------------------------------------------------------------


def test_current_without_credentials_is_401(client, registry):
    r = client.http.get("/registries/current")
    body = assert_problem(r, 401)
    assert body["title"] == "Unauthorized"
    assert "WWW-Authenticate" in r.headers


def test_current_with_registry_token(client, registry, registry_token):
    r = client.http.get("/registries/current", headers=bearer(registry_token))
    assert r.status_code == 200, r.body
    body = r.json_body
    assert set(body) == ITEM_KEYS | {"meta", "links"}
    assert body["uuid"] == registry.registry.uuid
    assert body["name"] == "WorkflowHub"
    assert body["links"] == {"self": "http://lm.test/registries/current"}
    assert isinstance(body["meta"]["created"], float)


def test_current_is_the_calling_registry(client, registry, second_registry):
    token = token_for(
        client, second_registry.client_id, second_registry.client_secret, "registry.info"
    )
    body = client.http.get("/registries/current", headers=bearer(token)).json_body
    assert body["uuid"] == second_registry.registry.uuid
    assert body["name"] == "Another Hub"


def test_current_with_token_lacking_registry_info_is_403(client, registry):
    token = token_for(client, registry.client_id, registry.client_secret, "workflow.read")
    r = client.http.get("/registries/current", headers=bearer(token))
    body = assert_problem(r, 403)
    assert body["title"] == "Forbidden"
    assert body["extra_info"]["missing_scopes"] == ["registry.info"]
    assert body["extra_info"]["required_scopes"] == ["registry.info"]


def test_current_with_user_api_key_is_403(client, registry, api_key):
    """A UI key holds registry.info (as LifeMonitor's) but is no registry."""
    r = client.http.get("/registries/current", headers={"ApiKey": api_key})
    body = assert_problem(r, 403)
    assert "registry client" in body["detail"]


def test_current_with_non_registry_client_token_is_403(client, registry):
    """A client holding registry.info that is not a registry's still needs to be one."""
    from chalicelib.auth import oauth2
    from chalicelib.db import session_scope

    with session_scope() as s:
        new = oauth2.create_client(
            s,
            client_name="tool",
            scope=frozenset({"registry.info"}),
            grant_types=("client_credentials",),
        )
        client_id, secret = new.client.client_id, new.client_secret
    token = token_for(client, client_id, secret, "registry.info")
    r = client.http.get("/registries/current", headers=bearer(token))
    body = assert_problem(r, 403)
    assert "registry client" in body["detail"]
    assert body["extra_info"] == {}


def test_current_with_invalid_token_is_401(client, registry):
    assert_problem(client.http.get("/registries/current", headers=bearer("x" * 43)), 401)
