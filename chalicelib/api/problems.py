"""`application/problem+json` responses (RFC 7807, contract §1.6)."""

from __future__ import annotations

from typing import Any

from chalice import Response

from chalicelib.errors import LifeMonitorError, problem_body

PROBLEM_JSON = "application/problem+json"


def problem(
    status: int,
    title: str | None = None,
    detail: str | None = None,
    *,
    instance: str | None = None,
    extra_info: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    body = problem_body(status, title, detail, instance, extra_info)
    if extra:
        body.update(extra)
    return Response(
        body=body, status_code=status, headers={**(headers or {}), "Content-Type": PROBLEM_JSON}
    )


def from_error(exc: LifeMonitorError, instance: str | None) -> Response:
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="lifemonitor", ApiKey'
    return problem(
        exc.status,
        exc.title,
        exc.detail,
        instance=instance,
        extra_info=exc.extra_info,
        headers=headers,
    )


# Chalice's own error codes (405, 415, binary-accept 400, view errors) → our titles.
CHALICE_TITLES = {
    "MethodNotAllowedError": "Method Not Allowed",
    "UnsupportedMediaType": "Unsupported Media Type",
    "BadRequestError": "Bad Request",
    "BadRequest": "Bad Request",
    "InternalServerError": "Internal Error",
    "NotFoundError": "Resource not found",
}


def from_chalice_body(
    status: int, body: dict, instance: str | None, headers: dict[str, str]
) -> Response:
    code = body.get("Code", "")
    message = body.get("Message") or ""
    if status >= 500:
        message = "An internal error occurred; it has been logged"
    keep = {k: v for k, v in headers.items() if k.lower() in {"allow"}}
    return problem(status, CHALICE_TITLES.get(code), message, instance=instance, headers=keep)
