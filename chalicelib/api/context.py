"""Per-request state shared by the middleware and the views (thread- and task-local)."""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from chalicelib.auth.principals import ANONYMOUS, Principal


@dataclass(frozen=True)
class RequestInfo:
    request_id: str
    path: str  # the path asked for, e.g. /registries/abc (no API Gateway stage)
    query: str  # the query string, "" if none

    @property
    def full_path(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

principal_var: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "principal", default=ANONYMOUS
)
request_var: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar(
    "request", default=None
)


def current_principal() -> Principal:
    return principal_var.get()


def current_request_info() -> RequestInfo | None:
    return request_var.get()


def request_info_from(event) -> RequestInfo:
    """Build from a Chalice Request: the real path, not the route template."""
    import uuid

    original = event.to_original_event()
    path = original.get("path") or original.get("requestContext", {}).get("path") or event.path
    params = event.query_params
    query = ""
    if params:
        query = urlencode([(k, v) for k in params for v in params.getlist(k)])
    supplied = (event.headers or {}).get("x-request-id", "")
    # Accept a caller's id only if it is short and plain, so logs cannot be forged.
    if supplied and _SAFE_ID.fullmatch(supplied):
        request_id = supplied
    else:
        request_id = (original.get("requestContext") or {}).get("requestId") or str(uuid.uuid4())
    return RequestInfo(request_id=request_id, path=path, query=query)
