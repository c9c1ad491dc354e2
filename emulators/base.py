"""A tiny threaded HTTP server for emulating remote services on loopback.

Emulators subclass `Emulator`, declare routes with `route(method, regex)` and reply with
`Reply`. Every emulator can inject latency and faults (per path regex) and records the
requests it received, so tests can assert on what our clients actually sent.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    match: re.Match | None = None

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict | list | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None

    def encode(self) -> tuple[bytes, str]:
        if isinstance(self.body, dict | list):
            return json.dumps(self.body).encode(), self.content_type or "application/json"
        if isinstance(self.body, str):
            return self.body.encode(), self.content_type or "text/plain; charset=utf-8"
        return self.body or b"", self.content_type or "application/octet-stream"


Handler = Callable[[Request], Reply]


@dataclass
class Fault:
    """Injected behaviour for matching paths: a status, a delay, a dropped connection,
    a truncated or oversized body."""

    pattern: str
    status: int | None = None
    body: bytes | str | dict | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering
    truncate: bool = False  # announce more bytes than sent
    times: int | None = None  # None: forever


class Emulator:
    """Subclass and register routes in `setup_routes()`; use as a context manager."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.routes: list[tuple[str, re.Pattern, Handler]] = []
        self.faults: list[Fault] = []
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.setup_routes()

    # -- to override ------------------------------------------------------------------
    def setup_routes(self) -> None:
        pass

    # -- API for subclasses and tests -------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method.upper(), re.compile(f"^{pattern}$"), handler))

    def fault(self, pattern: str, **kwargs: Any) -> Fault:
        f = Fault(pattern=pattern, **kwargs)
        with self._lock:
            self.faults.append(f)
        return f

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def requests_to(self, pattern: str) -> list[Request]:
        rx = re.compile(pattern)
        return [r for r in self.requests if rx.search(r.path)]

    @property
    def url(self) -> str:
        assert self._server is not None, "emulator not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0, host: str = "127.0.0.1") -> Emulator:
        """Serve on `host`:`port` (port 0: a free one, what tests want)."""
        emulator = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                emulator._dispatch(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        default_handle_error = self._server.handle_error

        def handle_error(request, client_address) -> None:
            # A client that hangs up early (timeouts, size limits: the point of fault tests)
            # is not an emulator error: no traceback for it.
            if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
                default_handle_error(request, client_address)

        self._server.handle_error = handle_error
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------
    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if re.search(f.pattern, path) and (f.times is None or f.times > 0):
                    if f.times is not None:
                        f.times -= 1
                    return f
        return None

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("content-length") or 0)
        body = h.rfile.read(length) if length else b""
        req = Request(
            method=h.command,
            path=parts.path,
            query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in h.headers.items()},
            body=body,
        )
        with self._lock:
            self.requests.append(req)
        if self.latency:
            time.sleep(self.latency)
        fault = self._take_fault(parts.path)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop:
                h.close_connection = True
                h.wfile.flush()
                h.connection.shutdown(2)
                return
            if fault.status is not None:
                self._send(
                    h, Reply(fault.status, fault.body, dict(fault.headers)), truncate=fault.truncate
                )
                return
        for method, rx, handler in self.routes:
            m = rx.match(parts.path)
            if m and (method == req.method or (method == "GET" and req.method == "HEAD")):
                req.match = m
                try:
                    reply = handler(req)
                except Exception as exc:  # an emulator bug must be visible, not a hang
                    reply = Reply(500, {"emulator_error": repr(exc)})
                self._send(h, reply, truncate=bool(fault and fault.truncate))
                return
        self._send(h, Reply(404, {"message": "Not Found", "path": parts.path}))

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, reply: Reply, truncate: bool = False) -> None:
        data, ctype = reply.encode()
        h.send_response(reply.status)
        headers = {"Content-Type": ctype, **reply.headers}
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data) + (100 if truncate else 0)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)
        if truncate:
            h.close_connection = True
