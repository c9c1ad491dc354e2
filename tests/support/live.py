"""The app served over real HTTP on loopback (chalice local's server, in a thread, on a
free port), and a small "browser" that follows redirects and fills forms — for flows that
cross several servers (our pages, an emulated login provider, a client's redirect URI)."""

from __future__ import annotations

import threading
from html.parser import HTMLParser
from urllib.parse import urljoin

import requests


class LiveServer:
    def __init__(self, app) -> None:
        from chalice.config import Config
        from chalice.local import LocalDevServer

        from infra.local import install_gateway_responses

        install_gateway_responses()
        config = Config.create(chalice_stage="test", app_name="lifemonitor")
        self._server = LocalDevServer(app, config, "127.0.0.1", 0)
        self._server.server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LiveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.server.shutdown()
        self._server.server.server_close()
        self._thread.join(5)


class Form:
    def __init__(self, action: str | None, method: str) -> None:
        self.action = action
        self.method = method.upper()
        self.fields: list[tuple[str, str]] = []
        self.buttons: list[tuple[str, str]] = []


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._current: Form | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._current = Form(a.get("action"), a.get("method") or "GET")
            self.forms.append(self._current)
        elif self._current is not None and tag == "input" and a.get("name"):
            self._current.fields.append((a["name"], a.get("value") or ""))
        elif self._current is not None and tag == "button" and a.get("name"):
            self._current.buttons.append((a["name"], a.get("value") or ""))

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None


def forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


class Browser:
    """A requests.Session that follows redirects by hand (so a test can stop at a client's
    redirect URI that nothing serves) and submits forms like a person would."""

    def __init__(self) -> None:
        self.http = requests.Session()
        self.http.trust_env = False
        self.visited: list[str] = []

    def go(
        self,
        url: str,
        *,
        stop_at: str | None = None,
        method: str = "GET",
        data=None,
        headers=None,
        max_hops: int = 20,
    ) -> requests.Response:
        for _ in range(max_hops):
            self.visited.append(url)
            r = self.http.request(
                method, url, data=data, headers=headers, allow_redirects=False, timeout=30
            )
            if r.status_code not in (301, 302, 303, 307, 308):
                return r
            url = urljoin(url, r.headers["Location"])
            method, data = "GET", None
            if stop_at and url.startswith(stop_at):
                self.visited.append(url)
                r.final_url = url
                return r
        raise AssertionError(f"too many redirects: {self.visited[-5:]}")

    def submit(
        self,
        response: requests.Response,
        values: dict[str, str] | None = None,
        button: tuple[str, str] | None = None,
        action: str | None = None,
        **kwargs,
    ):
        """Submit the page's POST form (the one whose action contains `action`; by default
        the first that is not the navigation's log-out form)."""
        page = [f for f in forms(response.text) if f.method == "POST"]
        if action is not None:
            page = [f for f in page if action in (f.action or "")]
        else:
            page = [f for f in page if not (f.action or "").endswith("/account/logout")]
        form = page[0]
        fields = [(k, v) for k, v in form.fields if k not in (values or {})]
        fields += list((values or {}).items())
        if button:
            fields.append(button)
        return self.go(
            urljoin(response.url, form.action or response.url), method="POST", data=fields, **kwargs
        )
