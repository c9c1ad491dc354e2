"""Every error the API answers is application/problem+json (contract §1.6), whoever makes it:
the gateway (no route), Chalice (405, 415, unhandled exceptions), the middleware (bad
credentials) or a view (domain errors). Plus the request id and CORS on every answer."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.api.helpers import PROBLEM_KEYS, assert_problem

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bare_client(chalice_app):
    """The test client without the database: for answers that never reach it (routing,
    405/415, CORS, docs). Any database use here fails loudly: nothing is migrated."""
    from chalice.test import Client

    with Client(chalice_app, stage_name="test", project_dir=str(ROOT)) as c:
        yield c


def header(response, name: str) -> str | None:
    return {k.lower(): v for k, v in response.headers.items()}.get(name.lower())


# --- unknown routes (answered by the gateway) -------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic Zm9vOmJhcg=="}],
    ids=["no-auth", "bearer", "basic"],
)
def test_unknown_route_is_404_problem(bare_client, method, headers):
    r = bare_client.http.request(method, "/no/such/route", headers=headers, body=b"")
    body = assert_problem(r, 404)
    assert set(body) == PROBLEM_KEYS
    assert body["title"] == "Resource not found"
    assert "/no/such/route" in body["detail"]
    # API Gateway's own wording never shows through.
    assert b"Authentication Token" not in r.body
    assert b"Credential" not in r.body


def test_unknown_route_under_a_known_prefix_is_404(bare_client):
    assert_problem(bare_client.http.get("/registries/current/nope/deeper"), 404)
    assert_problem(bare_client.http.get("/oauth2/token/extra"), 404)


def test_unknown_route_problem_has_instance_and_request_id(bare_client):
    r = bare_client.http.get("/no/such/route?x=1")
    body = assert_problem(r, 404)
    assert header(r, "X-Request-Id")
    assert body["instance"] == "http://lm.test/no/such/route?x=1"


# --- Chalice's own errors, rewritten by the middleware -------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/health", "GET,HEAD"),
        ("PUT", "/registries", "GET,HEAD"),
        ("GET", "/oauth2/token", "POST"),
        ("PATCH", "/registries/current", "GET,HEAD"),
    ],
)
def test_known_route_unknown_method_is_405_with_allow(bare_client, method, path, allowed):
    r = bare_client.http.request(method, path, headers={}, body=b"")
    body = assert_problem(r, 405)
    assert set(body) == PROBLEM_KEYS
    assert body["title"] == "Method Not Allowed"
    assert body["instance"] == f"http://lm.test{path}"
    assert header(r, "Allow") is not None
    assert set(header(r, "Allow").replace(" ", "").split(",")) == set(allowed.split(","))
    assert "Code" not in body and "Message" not in body


def test_wrong_content_type_on_token_endpoint_is_415(bare_client):
    r = bare_client.http.post(
        "/oauth2/token",
        headers={"Content-Type": "application/json"},
        body=b'{"grant_type": "client_credentials"}',
    )
    body = assert_problem(r, 415)
    assert body["title"] == "Unsupported Media Type"
    assert "application/json" in body["detail"]
    assert body["instance"] == "http://lm.test/oauth2/token"
    assert "Code" not in body


def test_unhandled_exception_is_500_without_internals(bare_client, monkeypatch):
    from chalicelib.services import health

    def explode():
        raise RuntimeError("kaboom: password=hunter2 at /srv/secret/path.py")

    monkeypatch.setattr(health, "check", explode)
    r = bare_client.http.get("/health?verbose=1")
    body = assert_problem(r, 500)
    assert set(body) == PROBLEM_KEYS
    assert body["title"] == "Internal Error"
    assert body["instance"] == "http://lm.test/health?verbose=1"
    assert header(r, "X-Request-Id")
    text = r.body.decode()
    for leak in ("kaboom", "hunter2", "RuntimeError", "Traceback", "path.py", 'File "'):
        assert leak not in text
    assert "Code" not in body and "Message" not in body


def test_chalice_view_error_becomes_problem(bare_client, monkeypatch):
    """A ChaliceViewError raised below a view is reshaped too, keeping its status."""
    from chalice import NotFoundError as ChaliceNotFound

    from chalicelib.services import health

    def missing():
        raise ChaliceNotFound("gone")

    monkeypatch.setattr(health, "check", missing)
    body = assert_problem(bare_client.http.get("/health"), 404)
    assert body["detail"] == "gone"
    assert "Code" not in body


# --- bad credentials -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"ApiKey": "not-a-key"},
        {"ApiKey": ""},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer"},
        {"Authorization": "bearer   "},
    ],
    ids=["bad-key", "empty-key", "bad-bearer", "bare-bearer", "blank-bearer"],
)
def test_invalid_credentials_on_public_route_are_401(client, headers):
    for path in ("/registries", "/health", "/openapi.json"):
        r = client.http.get(path, headers=headers)
        body = assert_problem(r, 401)
        assert body["title"] == "Unauthorized"
        assert header(r, "WWW-Authenticate")
        assert "Bearer" in header(r, "WWW-Authenticate")
        assert body["instance"] == f"http://lm.test{path}"


def test_basic_authorization_on_public_route_is_ignored(client):
    """Only Bearer is ours to check; Basic belongs to the token endpoint."""
    r = client.http.get("/registries", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert r.status_code == 200, r.body


def test_invalid_api_key_never_falls_back_to_anonymous_bearer(client, registry_token):
    """A valid token does not rescue an invalid ApiKey sent alongside it."""
    r = client.http.get(
        "/registries/current",
        headers={"ApiKey": "not-a-key", "Authorization": f"Bearer {registry_token}"},
    )
    assert_problem(r, 401)


# --- instance ------------------------------------------------------------------------------


def test_instance_is_full_request_url_with_query(client):
    r = client.http.get("/registries/0000?x=1&y=two", headers={"ApiKey": "nope"})
    assert assert_problem(r, 401)["instance"] == "http://lm.test/registries/0000?x=1&y=two"
    r = client.http.get("/registries/unknown-uuid?a=b")
    body = assert_problem(r, 404)
    assert body["instance"] == "http://lm.test/registries/unknown-uuid?a=b"


def test_instance_follows_external_server_url(bare_client, monkeypatch):
    monkeypatch.setenv("EXTERNAL_SERVER_URL", "https://api.example.org/")
    body = assert_problem(bare_client.http.get("/ui/unknown.js"), 404)
    assert body["instance"] == "https://api.example.org/ui/unknown.js"


# --- routing helpers -------------------------------------------------------------------------


def _request(raw_body: bytes | None = None, query: dict | None = None):
    return SimpleNamespace(raw_body=raw_body, query_params=query)


def test_json_body_parses_valid_json():
    from chalicelib.api.routing import json_body

    assert json_body(_request(b'{"a": [1, 2]}')) == {"a": [1, 2]}
    assert json_body(_request(b"[]")) == []


@pytest.mark.parametrize("raw", [b"{", b'{"a": }', b"not json", b"\xff\xfe\x00", b"{'a': 1}"])
def test_json_body_rejects_malformed_json(raw):
    from chalicelib.api.routing import json_body
    from chalicelib.errors import BadRequestError

    with pytest.raises(BadRequestError) as info:
        json_body(_request(raw))
    assert info.value.status == 400
    assert "malformed JSON" in info.value.detail


@pytest.mark.parametrize("raw", [None, b""])
def test_json_body_missing(raw):
    from chalicelib.api.routing import json_body
    from chalicelib.errors import BadRequestError

    with pytest.raises(BadRequestError, match="required"):
        json_body(_request(raw))
    assert json_body(_request(raw), required=False) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        (" 1 ", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("No", False),
        ("off", False),
        ("", False),
    ],
)
def test_query_flag_values(value, expected):
    from chalicelib.api.routing import query_flag

    assert query_flag(_request(query={"status": value}), "status") is expected
    assert query_flag(_request(query={"status": value}), "status", default=not expected) is expected


def test_query_flag_default_when_absent():
    from chalicelib.api.routing import query_flag

    assert query_flag(_request(query=None), "status") is False
    assert query_flag(_request(query=None), "status", default=True) is True
    assert query_flag(_request(query={"other": "1"}), "status", default=True) is True


@pytest.mark.parametrize("value", ["maybe", "2", "truthy", "t"])
def test_query_flag_rejects_bad_values(value):
    from chalicelib.api.routing import query_flag
    from chalicelib.errors import BadRequestError

    with pytest.raises(BadRequestError) as info:
        query_flag(_request(query={"status": value}), "status")
    assert info.value.status == 400
    assert "status" in info.value.detail and value in info.value.detail


# --- request id ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/openapi.json", {}, 200),
        ("GET", "/ui/x.js", {}, 404),
        ("GET", "/registries/current", {}, 401),
        ("DELETE", "/health", {}, 405),
        ("POST", "/oauth2/token", {"Content-Type": "application/json"}, 415),
    ],
)
def test_every_response_has_request_id(bare_client, method, path, headers, status):
    r = bare_client.http.request(method, path, headers=headers, body=b"")
    assert r.status_code == status, r.body
    assert UUID_RE.match(header(r, "X-Request-Id") or ""), r.headers


def test_every_database_backed_response_has_request_id(client):
    for method, path, headers, status in [
        ("GET", "/health", {}, 200),
        ("GET", "/registries", {}, 200),
        ("GET", "/registries/unknown", {}, 404),
        ("GET", "/registries", {"ApiKey": "bad"}, 401),
        ("POST", "/oauth2/token", FORM, 400),
    ]:
        r = client.http.request(method, path, headers=headers, body=b"")
        assert r.status_code == status, (path, r.body)
        assert UUID_RE.match(header(r, "X-Request-Id") or ""), (path, r.headers)


def test_request_ids_differ_between_requests(bare_client):
    ids = {header(bare_client.http.get("/openapi.json"), "X-Request-Id") for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.parametrize("supplied", ["abc-123", "A.b_C-9", "x" * 64])
def test_safe_caller_request_id_is_echoed(bare_client, supplied):
    r = bare_client.http.get("/openapi.json", headers={"X-Request-Id": supplied})
    assert header(r, "X-Request-Id") == supplied
    r = bare_client.http.get("/ui/unknown.js", headers={"X-Request-Id": supplied})
    assert_problem(r, 404)
    assert header(r, "X-Request-Id") == supplied


@pytest.mark.parametrize(
    "supplied",
    ["abc 123", 'abc\n{"level":"ERROR"}', "x" * 65, "a/b", "id;drop", "<script>"],
)
def test_unsafe_caller_request_id_is_replaced(bare_client, supplied):
    r = bare_client.http.get("/openapi.json", headers={"X-Request-Id": supplied})
    got = header(r, "X-Request-Id")
    assert got != supplied
    assert UUID_RE.match(got), got


@pytest.mark.parametrize("supplied", ["\u65e5\u672c-id", "\u00fc-umlaut", "\u0663\u0664"])
def test_non_ascii_caller_request_id_is_replaced(bare_client, supplied):
    r = bare_client.http.get("/openapi.json", headers={"X-Request-Id": supplied})
    got = header(r, "X-Request-Id")
    assert got.isascii()
    assert UUID_RE.match(got), got


# --- CORS ------------------------------------------------------------------------------------


def preflight(client, path: str, request_headers: str = "ApiKey") -> dict:
    """CORS preflight through the local gateway. (chalice.test's HTTPResponse cannot wrap the
    bodiless answer, so ask the gateway directly.)"""
    response = client.http._local_gateway.handle_request(
        method="OPTIONS",
        path=path,
        headers={
            "Origin": "https://app.example.org",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": request_headers,
        },
        body=b"",
    )
    assert response["statusCode"] == 200
    return {k.lower(): v for k, v in response["headers"].items()}


@pytest.mark.parametrize("path", ["/registries", "/registries/current", "/health"])
def test_cors_preflight_allows_apikey_header(bare_client, path):
    headers = preflight(bare_client, path)
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert {"apikey", "authorization", "content-type", "x-request-id"} <= allowed
    assert headers["access-control-allow-origin"] == "*"
    assert {"GET", "OPTIONS"} <= set(headers["access-control-allow-methods"].split(","))


def test_cors_preflight_on_token_endpoint_allows_post(bare_client):
    headers = preflight(bare_client, "/oauth2/token", "Content-Type")
    assert "POST" in headers["access-control-allow-methods"].split(",")


def test_view_errors_keep_cors_headers(bare_client):
    r = bare_client.http.get("/ui/unknown.js")
    assert_problem(r, 404)
    assert header(r, "Access-Control-Allow-Origin") == "*"


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("POST", "/oauth2/token", {"Content-Type": "application/json"}, 415),
        ("GET", "/registries", {"ApiKey": "revoked-key"}, 401),
    ],
)
def test_errors_outside_views_keep_cors_headers(client, method, path, headers, status):
    r = client.http.request(method, path, headers=headers, body=b"")
    assert_problem(r, status)
    assert header(r, "Access-Control-Allow-Origin") == "*"


def test_responses_expose_request_id_to_browsers(bare_client):
    r = bare_client.http.get("/openapi.json")
    assert header(r, "Access-Control-Allow-Origin") == "*"
    exposed = {h.strip().lower() for h in header(r, "Access-Control-Expose-Headers").split(",")}
    assert "x-request-id" in exposed


# -- HEAD (issue 9, defect 8) -------------------------------------------------------------------


def _get_routes() -> list[str]:
    import app

    return sorted(path for path, entries in app.app.routes.items() if "GET" in entries)


def test_every_get_route_serves_head():
    import app

    for path in _get_routes():
        assert "HEAD" in app.app.routes[path], path


@pytest.mark.parametrize("path", ["/health", "/registries", "/workflows/issues", "/openapi.json"])
def test_head_answers_like_get_without_a_body(client, path):
    get = client.http.get(path)
    head = client.http.request("HEAD", path, headers={}, body=b"")
    assert head.status_code == get.status_code == 200
    assert head.body == b""
    assert header(head, "Content-Type") == header(get, "Content-Type")
    assert header(head, "X-Request-Id")


def test_head_of_a_missing_resource_is_a_404_without_a_body(client):
    head = client.http.request("HEAD", f"/workflows/{'0' * 8}-0000-0000-0000-{'0' * 12}", body=b"")
    assert head.status_code == 404
    assert head.body == b""


def test_head_where_there_is_no_get_is_a_405_without_a_body(bare_client):
    head = bare_client.http.request("HEAD", "/oauth2/token", headers={}, body=b"")
    assert head.status_code == 405
    assert head.body == b""
    assert "POST" in header(head, "Allow")
