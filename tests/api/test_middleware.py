"""The middleware's JSON encoding (orjson, Chalice's json.dumps for what orjson refuses)
and the collector paused while a view runs."""

from __future__ import annotations

import gc
import json

import pytest
from chalice import Chalice, Response
from chalice.test import Client


@pytest.fixture(scope="module")
def mini_app():
    from chalicelib.api.middleware import http_middleware

    app = Chalice(app_name="middlewaretest", configure_logs=False)
    app.register_middleware(http_middleware, "http")
    seen: dict[str, bool] = {}

    @app.route("/t/json")
    def plain():
        return {"name": "Zoë ✓", "n": 2**63 - 1, "items": [1.5, None, True]}

    @app.route("/t/surrogate")
    def surrogate():
        return {"bad": "\ud800"}  # orjson refuses lone surrogates: json.dumps writes them

    @app.route("/t/huge")
    def huge():
        return {"n": 2**70}

    @app.route("/t/typed")
    def typed():
        return Response(body=[1, 2], headers={"Content-Type": "application/vnd.x+json"})

    @app.route("/t/text")
    def text():
        return Response(body="plain", headers={"Content-Type": "text/plain"})

    @app.route("/t/gc")
    def collector():
        seen["enabled"] = gc.isenabled()
        return {"ok": True}

    app.seen = seen
    return app


@pytest.fixture
def client(mini_app):
    with Client(mini_app, stage_name="test") as c:
        yield c


def ctype(r) -> str:
    return {k.lower(): v for k, v in r.headers.items()}["content-type"]


def test_dicts_are_encoded_once_as_json_text(client, mini_app):
    from chalicelib.api.middleware import _encode_json

    r = client.http.get("/t/json")
    assert r.status_code == 200 and ctype(r) == "application/json"
    assert json.loads(r.body) == {"name": "Zoë ✓", "n": 2**63 - 1, "items": [1.5, None, True]}
    response = Response(body={"a": [1, "é"]})
    _encode_json(response)
    assert isinstance(response.body, str)
    assert json.loads(response.body) == {"a": [1, "é"]}


@pytest.mark.parametrize(("path", "expected"), [("/t/surrogate", "\ud800"), ("/t/huge", 2**70)])
def test_what_orjson_refuses_is_left_to_chalice(client, path, expected):
    r = client.http.get(path)
    assert r.status_code == 200
    value = next(iter(json.loads(r.body).values()))
    assert value == expected


def test_a_views_content_type_is_kept_and_text_untouched(client):
    r = client.http.get("/t/typed")
    assert ctype(r) == "application/vnd.x+json" and json.loads(r.body) == [1, 2]
    r = client.http.get("/t/text")
    assert r.body == b"plain" and ctype(r) == "text/plain"


def test_error_bodies_are_left_alone():
    from chalicelib.api.middleware import _encode_json

    response = Response(body={"status": "down"}, status_code=503)
    _encode_json(response)
    assert response.body == {"status": "down"}  # problem+json and reports keep their path


def test_the_collector_is_paused_in_a_view_and_back_after(client, mini_app):
    assert gc.isenabled()
    r = client.http.get("/t/gc")
    assert r.status_code == 200
    assert mini_app.seen["enabled"] is False
    assert gc.isenabled()


def test_an_answer_over_lambdas_limit_becomes_a_problem_in_lambda(client, monkeypatch):
    from chalicelib.api import middleware

    monkeypatch.setattr(middleware, "LAMBDA_RESULT_LIMIT", 40)
    r = client.http.get("/t/json")  # not in Lambda: served whole
    assert r.status_code == 200 and json.loads(r.body)["name"] == "Zoë ✓"
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "lifemonitor-dev")
    r = client.http.get("/t/json")
    assert r.status_code == 500 and ctype(r).startswith("application/problem+json")
    body = json.loads(r.body)
    assert body["title"] == "Answer Too Large" and "limit=" in body["detail"]
    assert body["extra_info"]["limit"] == 40 and body["extra_info"]["size"] > 40
    monkeypatch.setattr(middleware, "LAMBDA_RESULT_LIMIT", 10_000)
    assert client.http.get("/t/json").status_code == 200
