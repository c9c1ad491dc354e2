"""A browser-like wrapper of the Chalice test client: keeps the session cookie, reads the
page's CSRF token, posts forms."""

from __future__ import annotations

import re
from urllib.parse import urlencode

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def header(r, name: str) -> str | None:
    return {k.lower(): v for k, v in r.headers.items()}.get(name.lower())


class Browser:
    def __init__(self, client) -> None:
        self.client = client
        self.cookie: str | None = None
        self.last = None

    def _headers(self, extra=None) -> dict:
        headers = dict(extra or {})
        if self.cookie:
            headers["cookie"] = self.cookie
        return headers

    def _keep(self, r):
        set_cookie = header(r, "Set-Cookie")
        if set_cookie:
            value = set_cookie.split(";")[0]
            self.cookie = None if "Max-Age=0" in set_cookie else value
        self.last = r
        return r

    def get(self, path: str, headers=None):
        return self._keep(self.client.http.get(path, headers=self._headers(headers)))

    def post(self, path: str, fields: dict | None = None, *, csrf: str | None = "auto", **kw):
        fields = dict(fields or {})
        if csrf == "auto":
            fields["csrf_token"] = self.csrf()
        elif csrf is not None:
            fields["csrf_token"] = csrf
        body = urlencode(fields, doseq=True)
        headers = self._headers({**FORM, **kw.get("headers", {})})
        return self._keep(self.client.http.post(path, headers=headers, body=body))

    def csrf(self) -> str:
        for page in ("/", "/account/login"):  # the nav's logout form, else the login form
            if self.last is not None and _CSRF.search(self.text()):
                break
            self.get(page)
        found = _CSRF.search(self.text())
        if found:
            return found.group(1)
        from chalicelib.web.session import load_session  # no form on the page: the cookie's

        return load_session({"cookie": self.cookie})["_csrf"]

    def text(self) -> str:
        return self.last.body.decode() if self.last is not None else ""

    def login(self, username="alice", password="correct horse"):  # noqa: S107 - test user
        self.get("/account/login")
        r = self.post("/account/login", {"username": username, "password": password})
        assert r.status_code == 303, r.body
        return r
