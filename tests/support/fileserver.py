"""A loopback file server for outbound-fetch tests: serves bytes at paths (crate zips for
`roc_link`), optionally only to requests carrying a given `Authorization` header, plus
redirects and chunked (length-less) bodies. Built on `emulators.base.Emulator`, so
faults (status, delay, dropped connections) and request recording come with it."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from emulators.base import Emulator, Reply, Request

STREAM_HEADER = "X-Test-Stream"  # internal marker: send the body chunked, no Content-Length


@dataclass
class Served:
    data: bytes
    status: int = 200
    content_type: str = "application/zip"
    authorization: str | None = None  # required value of the Authorization header
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False


class FileServer(Emulator):
    def setup_routes(self) -> None:
        self.files: dict[str, Served] = {}
        self.route("GET", r"/.*", self._serve)
        self.route("POST", r"/.*", self._serve)

    def add(self, path: str, data: bytes, **kwargs) -> str:
        """Serve `data` at `path`; returns its URL."""
        self.files[path] = Served(data=data, **kwargs)
        return self.url + path

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        self.files[path] = Served(
            data=b"", status=status, content_type="text/plain", headers={"Location": location}
        )
        return self.url + path

    def received(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def _serve(self, req: Request) -> Reply:
        spec = self.files.get(req.path)
        if spec is None:
            return Reply(404, {"message": "Not Found", "path": req.path})
        if (
            spec.authorization is not None
            and req.headers.get("authorization") != spec.authorization
        ):
            return Reply(401, {"message": "Unauthorized"})
        headers = dict(spec.headers)
        if spec.chunked:
            headers[STREAM_HEADER] = "1"
        return Reply(spec.status, spec.data, headers, spec.content_type)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, reply: Reply, truncate: bool = False) -> None:
        if STREAM_HEADER not in reply.headers:
            Emulator._send(h, reply, truncate=truncate)
            return
        data, ctype = reply.encode()
        h.send_response(reply.status)
        h.send_header("Content-Type", ctype)
        for k, v in reply.headers.items():
            if k != STREAM_HEADER:
                h.send_header(k, v)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for i in range(0, len(data), 4096):
            chunk = data[i : i + 4096]
            h.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()


def unused_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
