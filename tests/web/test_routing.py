"""Page plumbing: HTML answers and errors, the cookie, CSRF and Origin checks on posts,
and no cookie for API-key or Bearer requests."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from chalice import Blueprint, Chalice
from chalice.test import Client

from chalicelib.errors import NotFoundError
from chalicelib.web import session as S
from chalicelib.web.render import render
from chalicelib.web.responses import html, redirect
from chalicelib.web.routing import PAGES, page

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def mini_app():
    from chalicelib.api.middleware import http_middleware

    bp = Blueprint(__name__)

    @page(bp, "/t/count", methods=["GET", "POST"])
    def count(request):
        if request.method == "POST":
            request.session["n"] = int(request.session.get("n", 0)) + 1
            return redirect("/t/count", session=request.session)
        body = render("error.html", session=request.session, error_title="n", detail="x")
        return html(body + f"<!--n={request.session.get('n', 0)}-->", session=request.session)

    @page(bp, "/t/missing")
    def missing(request):
        raise NotFoundError("no such thing here <script>")

    @page(bp, "/t/boom")
    def boom(request):
        raise RuntimeError("secret detail")

    app = Chalice(app_name="webtest", configure_logs=False)
    app.register_middleware(http_middleware, "http")
    app.register_blueprint(bp)
    return app


@pytest.fixture
def web(mini_app, db):
    with Client(mini_app, stage_name="test") as c:
        yield c


def header(r, name):
    return {k.lower(): v for k, v in r.headers.items()}.get(name.lower())


def cookie_of(r):
    value = header(r, "Set-Cookie")
    return value.split(";")[0] if value else None


def csrf(c, cookie):
    """The CSRF token of the session behind `cookie`."""
    return S.load_session({"cookie": cookie})["_csrf"]


def test_pages_are_registered_apart_from_the_api(mini_app):
    assert ("/t/count", "POST") in PAGES


def test_get_sets_a_session_with_a_csrf_token(web):
    r = web.http.get("/t/count")
    assert r.status_code == 200
    assert header(r, "Content-Type").startswith("text/html")
    assert header(r, "Cache-Control") == "no-store"
    cookie = cookie_of(r)
    assert cookie and cookie.startswith("lm_session=")
    assert csrf(web, cookie)
    r = web.http.get("/t/count", headers={"cookie": cookie})
    assert header(r, "Set-Cookie") is None  # unchanged session, no new cookie


def test_post_with_the_token_works_without_it_is_refused(web):
    cookie = cookie_of(web.http.get("/t/count"))
    token = csrf(web, cookie)
    ok = web.http.post(
        "/t/count", headers={**FORM, "cookie": cookie}, body=urlencode({"csrf_token": token})
    )
    assert ok.status_code == 303 and header(ok, "Location") == "/t/count"
    cookie2 = cookie_of(ok)
    assert S.load_session({"cookie": cookie2})["n"] == 1
    for body in ({}, {"csrf_token": "forged"}, {"csrf_token": token + "x"}):
        r = web.http.post("/t/count", headers={**FORM, "cookie": cookie2}, body=urlencode(body))
        assert r.status_code == 403
        assert header(r, "Content-Type").startswith("text/html")
        assert "security token" in r.body.decode()
    # A cross-site post has no cookie (SameSite=Lax): refused, nothing changed.
    r = web.http.post("/t/count", headers=FORM, body=urlencode({"csrf_token": token}))
    assert r.status_code == 403


def test_cross_origin_post_is_refused_even_with_the_token(web):
    cookie = cookie_of(web.http.get("/t/count"))
    token = csrf(web, cookie)
    r = web.http.post(
        "/t/count",
        headers={**FORM, "cookie": cookie, "Origin": "https://evil.example"},
        body=urlencode({"csrf_token": token}),
    )
    assert r.status_code == 403 and "Cross-site" in r.body.decode()
    r = web.http.post(
        "/t/count",
        headers={**FORM, "cookie": cookie, "Origin": "http://lm.test"},
        body=urlencode({"csrf_token": token}),
    )
    assert r.status_code == 303


def test_non_form_post_is_refused_with_a_page(web):
    cookie = cookie_of(web.http.get("/t/count"))
    r = web.http.post(
        "/t/count",
        headers={"Content-Type": "application/json", "cookie": cookie},
        body=b'{"csrf_token": "x"}',
    )
    assert r.status_code == 415
    assert header(r, "Content-Type").startswith("text/html")


def test_errors_are_html_pages_escaped(web):
    r = web.http.get("/t/missing")
    assert r.status_code == 404
    assert header(r, "Content-Type").startswith("text/html")
    body = r.body.decode()
    assert "no such thing here &lt;script&gt;" in body and "<script>" not in body
    r = web.http.get("/t/boom")
    assert r.status_code == 500
    assert header(r, "Content-Type").startswith("text/html")
    assert "secret detail" not in r.body.decode()


def test_api_key_and_bearer_requests_get_no_cookie(web, api_key):
    r = web.http.get("/t/count", headers={"ApiKey": api_key})
    assert r.status_code == 200
    assert header(r, "Set-Cookie") is None
    r = web.http.get("/t/count", headers={"Authorization": "Bearer nope"})
    assert header(r, "Set-Cookie") is None


def test_forged_cookie_gives_a_fresh_anonymous_session(web):
    r = web.http.get("/t/count", headers={"cookie": "lm_session=eyJ1c2VyX2lkIjoxfQ.forged"})
    assert r.status_code == 200
    assert S.load_session({"cookie": cookie_of(r)}).user_id is None


def test_redirect_keeps_absolute_urls_and_prefixes_our_base_path(monkeypatch):
    assert redirect("https://provider.example/auth").headers["Location"] == (
        "https://provider.example/auth"
    )
    monkeypatch.setenv("EXTERNAL_SERVER_URL", "https://lm.example/api")
    assert redirect("/account/profile").headers["Location"] == "/api/account/profile"
    assert redirect("/x").status_code == 303
