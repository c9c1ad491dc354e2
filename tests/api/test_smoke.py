from tests.api.helpers import assert_problem


def test_health(client):
    r = client.http.get("/health")
    assert r.status_code == 200
    assert r.json_body["status"] == "healthy"


def test_registries_empty(client):
    r = client.http.get("/registries")
    assert r.status_code == 200
    assert r.json_body["items"] == []
    assert set(r.json_body) == {"items", "meta", "links"}


def test_registry_token_flow(client, registry_token):
    r = client.http.get(
        "/registries/current", headers={"Authorization": f"Bearer {registry_token}"}
    )
    assert r.status_code == 200, r.body
    assert r.json_body["name"] == "WorkflowHub"


def test_unknown_route(client):
    assert_problem(client.http.get("/nope"), 404)
