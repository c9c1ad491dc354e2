"""The landing page and the stylesheet, through the real app."""

from __future__ import annotations


def header(r, name):
    return {k.lower(): v for k, v in r.headers.items()}.get(name.lower())


def test_landing_page_anonymous(client):
    r = client.http.get("/")
    assert r.status_code == 200
    assert header(r, "Content-Type").startswith("text/html")
    body = r.body.decode()
    assert 'href="/account/login"' in body and 'href="/static/lifemonitor.css"' in body
    assert "Log out" not in body


def test_stylesheet_is_served_locally(client):
    r = client.http.get("/static/lifemonitor.css")
    assert r.status_code == 200
    assert header(r, "Content-Type").startswith("text/css")
    assert b"http" not in r.body  # no external asset


def test_profile_alias_redirects(client):
    r = client.http.get("/profile")
    assert r.status_code == 303 and header(r, "Location") == "/account/profile"
