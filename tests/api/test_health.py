"""GET /health: the service and its database."""

from __future__ import annotations

import socket

import pytest

UNREACHABLE = "postgresql://nobody@127.0.0.1:{port}/x"


def header(response, name: str) -> str | None:
    return {k.lower(): v for k, v in response.headers.items()}.get(name.lower())


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def database_down(db, monkeypatch):
    """DATABASE_URL points at a closed port for the test, and back for the db teardown."""
    from chalicelib.db import dispose_engines

    with monkeypatch.context() as m:
        m.setenv("DATABASE_URL", UNREACHABLE.format(port=closed_port()))
        dispose_engines()
        yield
        dispose_engines()


def test_healthy(client):
    from chalicelib import __version__

    r = client.http.get("/health")
    assert r.status_code == 200, r.body
    body = r.json_body
    assert body["status"] == "healthy"
    assert body["version"] == __version__
    assert body["checks"]["database"] == "ok"
    assert isinstance(body["checks"]["database_ms"], int | float)
    assert header(r, "Cache-Control") == "no-store"


def test_health_needs_no_credentials_and_ignores_query(client):
    r = client.http.get("/health?probe=elb")
    assert r.status_code == 200
    assert r.json_body["status"] == "healthy"


def test_database_unreachable_is_503_not_500(client, database_down):
    r = client.http.get("/health")
    assert r.status_code == 503, r.body
    assert b"nobody" not in r.body  # no connection details leak


def test_database_unreachable_reports_unhealthy(client, database_down):
    r = client.http.get("/health")
    assert r.status_code == 503
    body = r.json_body
    assert body["status"] == "unhealthy"
    assert body["checks"]["database"] == "unavailable"
    assert header(r, "Cache-Control") == "no-store"


def test_service_reports_unhealthy_when_database_unreachable(database_down):
    """The service itself (below the HTTP layer) answers, quickly, rather than raising."""
    from chalicelib.services import health

    report = health.check()
    assert report["status"] == "unhealthy"
    assert report["checks"]["database"] == "unavailable"
    assert report["checks"]["database_ms"] < 5000


def test_health_recovers_when_database_returns(client, database_down, monkeypatch, db):
    assert client.http.get("/health").status_code == 503
    monkeypatch.setenv("DATABASE_URL", db)
    r = client.http.get("/health")
    assert r.status_code == 200, r.body
    assert r.json_body["checks"]["database"] == "ok"
