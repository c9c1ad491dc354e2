"""Small helpers for API tests."""

from __future__ import annotations

from urllib.parse import urlencode

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "extra_info"}


def form(**fields: str) -> bytes:
    return urlencode(fields).encode()


def assert_problem(response, status: int) -> dict:
    """The response is an application/problem+json error with every key of contract §1.6."""
    assert response.status_code == status, response.body
    ctype = {k.lower(): v for k, v in response.headers.items()}.get("content-type", "")
    assert ctype.startswith("application/problem+json"), ctype
    body = response.json_body
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status
    return body
