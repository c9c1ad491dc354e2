"""GET /openapi.json matches the routes the app really serves; GET /ui works offline."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.api.helpers import assert_problem

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bare_client(chalice_app):
    """The test client without the database: the docs never reach it."""
    from chalice.test import Client

    with Client(chalice_app, stage_name="test", project_dir=str(ROOT)) as c:
        yield c


def header(response, name: str) -> str | None:
    return {k.lower(): v for k, v in response.headers.items()}.get(name.lower())


@pytest.fixture
def document(bare_client):
    r = bare_client.http.get("/openapi.json")
    assert r.status_code == 200, r.body
    return r.json_body


def operations(doc: dict):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield path, method.upper(), op


def app_routes() -> set[tuple[str, str]]:
    """The API's routes: every route but the web pages (chalicelib/web), which are HTML for
    browsers, not API operations."""
    import app
    from chalicelib.web.routing import PAGES

    return {
        (path, method)
        for path, entries in app.app.routes.items()
        for method in entries
        if method not in {"OPTIONS", "HEAD"}  # HEAD mirrors every GET, undocumented
        and (path, method) not in PAGES
    }


def test_document_is_openapi_3(document):
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"]
    assert document["info"]["version"]
    assert document["paths"]


def test_document_is_valid_openapi(document):
    validator = pytest.importorskip(
        "openapi_spec_validator", reason="openapi-spec-validator not installed"
    )
    validator.validate(document)  # raises on any schema violation


def test_document_is_served_without_authentication_and_cached(bare_client):
    r = bare_client.http.get("/openapi.json")
    assert r.status_code == 200
    assert "max-age" in (header(r, "Cache-Control") or "")


def test_documented_operations_are_the_app_routes(document):
    documented = {(path, method) for path, method, _ in operations(document)}
    served = app_routes()
    assert served, "no routes registered"
    assert served - documented == set(), "routes missing from openapi.json"
    assert documented - served == set(), "documented operations the app does not serve"


def test_route_registry_matches_app_routes():
    from chalicelib.api.routing import ROUTES

    assert set(ROUTES) == app_routes()


def test_every_operation_has_responses_and_unique_operation_id(document):
    ids = []
    for path, method, op in operations(document):
        assert op.get("operationId"), f"{method} {path} has no operationId"
        assert op.get("responses"), f"{method} {path} has no responses"
        for status in op["responses"]:
            assert status == "default" or re.fullmatch(r"[1-5][0-9X]{2}", status), status
        ids.append(op["operationId"])
    assert len(ids) == len(set(ids)), "duplicate operationIds"


def test_documented_security_matches_route_declarations(document):
    """Public routes need nothing; the others list the scopes their route requires."""
    from chalicelib.api.routing import ROUTES

    ops = {(path, method): op for path, method, op in operations(document)}
    for key, summary in ROUTES.items():
        if key not in ops:
            continue  # reported by test_documented_operations_are_the_app_routes
        security = ops[key].get("security", document.get("security"))
        if summary["public"]:
            assert security == [], f"{key} is public but documented with security"
            continue
        documented_scopes = {
            s for requirement in security for scopes in requirement.values() for s in scopes
        }
        assert set(summary["scopes"]) <= documented_scopes, key


def test_oauth2_scopes_are_ours(document):
    from chalicelib.auth import scopes as S

    schemes = document["components"]["securitySchemes"]
    flows = schemes["RegistryClientCredentials"]["flows"]["clientCredentials"]
    assert flows["tokenUrl"].endswith("/oauth2/token")
    assert set(flows["scopes"]) == S.REGISTRY_CLIENT
    assert schemes["apiKey"] == {
        **schemes["apiKey"],
        "type": "apiKey",
        "in": "header",
        "name": "ApiKey",
    }


def test_servers_is_external_server_url(document):
    assert document["servers"][0]["url"] == "http://lm.test"


def test_servers_follow_environment(bare_client, monkeypatch):
    monkeypatch.setenv("EXTERNAL_SERVER_URL", "https://api.example.org/lm/")
    doc = bare_client.http.get("/openapi.json").json_body
    assert doc["servers"] == [{"url": "https://api.example.org/lm"}]
    monkeypatch.setenv("EXTERNAL_SERVER_URL", "http://other.test")
    doc = bare_client.http.get("/openapi.json").json_body
    assert doc["servers"] == [{"url": "http://other.test"}]


# --- Swagger UI ------------------------------------------------------------------------------


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in {"src", "href"} and value:
                self.refs.append(value)


def page_refs(html: str) -> tuple[list[str], str]:
    parser = _Refs()
    parser.feed(html)
    return parser.refs, html


def test_ui_is_html_with_local_assets_only(bare_client):
    r = bare_client.http.get("/ui")
    assert r.status_code == 200, r.body
    assert header(r, "Content-Type").startswith("text/html")
    html = r.body.decode()
    assert html.lstrip().lower().startswith("<!doctype html>")
    refs, _ = page_refs(html)
    assets = [ref for ref in refs if not ref.startswith("data:")]
    assert assets, "the page references no assets"
    for ref in assets:
        assert ref.startswith("/ui/"), ref
    assert not re.search(r"""(?:src|href|url)\s*[=:(]\s*["']?\s*(?:https?:)?//""", html), (
        "the page loads something from another origin (a CDN?)"
    )
    assert "http://" not in html and "https://" not in html
    assert '"/openapi.json"' in html
    assert "SwaggerUIBundle" in html


EXPECTED_TYPES = {".css": "text/css", ".js": "application/javascript"}


def test_ui_assets_are_served(bare_client):
    refs, _ = page_refs(bare_client.http.get("/ui").body.decode())
    assets = [ref for ref in refs if ref.startswith("/ui/")]
    assert len(assets) == 4
    for ref in assets:
        r = bare_client.http.get(ref)
        assert r.status_code == 200, (ref, r.body[:200])
        ctype = header(r, "Content-Type")
        expected = EXPECTED_TYPES[ref[ref.rindex(".") :]]
        assert ctype.split(";")[0].strip() == expected, (ref, ctype)
        assert len(r.body) > 100, ref
        assert "max-age" in header(r, "Cache-Control")
    bundle = bare_client.http.get("/ui/swagger-ui-bundle.js").body
    assert b"SwaggerUIBundle" in bundle


def test_ui_under_a_base_path(bare_client, monkeypatch):
    monkeypatch.setenv("EXTERNAL_SERVER_URL", "https://api.example.org/lm")
    html = bare_client.http.get("/ui").body.decode()
    refs, _ = page_refs(html)
    assert all(ref.startswith("/lm/ui/") for ref in refs if not ref.startswith("data:"))
    assert '"/lm/openapi.json"' in html


@pytest.mark.parametrize(
    "asset", ["nope.js", "index.html", "swagger-ui.css.map", "..%2F..%2Fapp.py", "%2E%2E"]
)
def test_unknown_ui_asset_is_404_problem(bare_client, asset):
    r = bare_client.http.get(f"/ui/{asset}")
    body = assert_problem(r, 404)
    assert body["title"] == "Resource not found"
