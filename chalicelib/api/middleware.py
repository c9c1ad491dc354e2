"""The one HTTP middleware: request id and logs, the caller's principal, problem+json for
every error Chalice itself produces (405, 415, bad JSON, unhandled exceptions)."""

from __future__ import annotations

import logging
import time

from chalicelib import gcpause
from chalicelib.api import context
from chalicelib.api.problems import PROBLEM_JSON, from_chalice_body, from_error, problem

log = logging.getLogger(__name__)

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "X-Request-Id",
}


def instance_url(info: context.RequestInfo | None) -> str | None:
    if info is None:
        return None
    from chalicelib.config import ConfigError, get_settings

    try:
        return get_settings().external_server_url + info.full_path
    except ConfigError:  # reporting a broken environment must not fail again
        return info.full_path


def http_middleware(event, get_response):
    from chalicelib import logs
    from chalicelib.errors import LifeMonitorError

    logs.configure()
    started = time.perf_counter()
    info = context.request_info_from(event)
    tokens = [context.request_var.set(info), logs.request_id_var.set(info.request_id)]
    principal = None
    _default_accept(event)
    try:
        try:
            principal = _principal(event)
            context.principal_var.set(principal)
            with gcpause.paused():
                response = get_response(event)
        except LifeMonitorError as exc:
            response = from_error(exc, instance_url(info))
        except Exception:
            log.exception("unhandled error on %s %s", event.method, info.path)
            response = problem(
                500,
                "Internal Error",
                "An internal error occurred; it has been logged",
                instance=instance_url(info),
            )
        response = _as_problem(response, info)
        _encode_json(response)
        response = _within_lambda_limit(response, info)
        if event.method == "HEAD":
            # The GET answer's status and headers, never a body (bytes stay bytes: Chalice
            # wants bytes for binary types such as the crate zip).
            response.body = b"" if isinstance(response.body, bytes) else ""
        response.headers["X-Request-Id"] = info.request_id
        # Errors made here or by Chalice before the view lack CORS headers: browsers could
        # not read them. Every answer gets the app's CORS headers.
        for name, value in CORS_HEADERS.items():
            response.headers.setdefault(name, value)
        log.info(
            "%s %s -> %s",
            event.method,
            info.path,
            response.status_code,
            extra={
                "http_method": event.method,
                "path": info.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "principal": principal.describe() if principal else "unresolved",
            },
        )
        return response
    finally:
        context.principal_var.set(context.ANONYMOUS)
        context.request_var.reset(tokens[0])
        logs.request_id_var.reset(tokens[1])


def _encode_json(response) -> None:
    """A view's dict or list encoded by orjson (C; a catalogue-wide list is megabytes,
    which json.dumps, as Chalice would call it, takes several times longer to write).
    What orjson refuses (lone surrogates, integers over 64 bits) is left to Chalice."""
    body = response.body
    if response.status_code >= 400 or not isinstance(body, dict | list):
        return
    import orjson

    try:
        response.body = orjson.dumps(body).decode()
    except TypeError:
        return
    if not any(k.lower() == "content-type" for k in response.headers):
        response.headers["Content-Type"] = "application/json"


# Lambda refuses a function result over 6 MB (the proxy response's JSON, where the body is
# one escaped string); API Gateway then answers an opaque 502. Headers take the margin.
LAMBDA_RESULT_LIMIT = 6 * 1024 * 1024 - 32 * 1024


def _within_lambda_limit(response, info):
    """In Lambda, an answer too large to return becomes a problem that says what to do:
    lists page with `limit` and `cursor` (their `links.next`)."""
    body = response.body
    if not isinstance(body, str) or len(body) < LAMBDA_RESULT_LIMIT // 2:
        return response  # even fully escaped it fits: no need to measure
    from chalicelib.config import get_settings

    if not get_settings().in_lambda:
        return response
    import orjson

    size = len(orjson.dumps(body))  # as the string travels inside the result
    if size <= LAMBDA_RESULT_LIMIT:
        return response
    log.error("answer of %d bytes to %s is over Lambda's response limit", size, info.path)
    return problem(
        500,
        "Answer Too Large",
        f"The answer ({size} bytes) is larger than one response may be here; ask for it in "
        "pages with ?limit=N and follow links.next",
        instance=instance_url(info),
        extra_info={"size": size, "limit": LAMBDA_RESULT_LIMIT},
    )


def _default_accept(event) -> None:
    """No Accept header means any type (RFC 9110 §12.5.1). Chalice refuses a binary answer
    (the crate zip) to a request without one; clients that send none get the zip."""
    headers = event.headers
    if headers is not None and headers.get("accept") is None:
        from chalice.app import CaseInsensitiveMapping

        event.headers = CaseInsensitiveMapping({**dict(headers), "accept": "*/*"})


def _principal(event):
    headers = event.headers or {}
    api_key = headers.get("apikey")
    authorization = headers.get("authorization")
    if api_key is None and not (authorization or "").lower().startswith("bearer"):
        return context.ANONYMOUS  # no database work for anonymous calls
    from chalicelib.auth.principals import resolve
    from chalicelib.db import session_scope

    with session_scope() as session:
        return resolve(session, api_key, authorization)


def _as_problem(response, info):
    """Chalice answers its own errors as {"Code", "Message"}; make them problem+json."""
    if response.status_code < 400:
        return response
    ctype = {k.lower(): v for k, v in response.headers.items()}.get("content-type", "")
    if ctype.startswith((PROBLEM_JSON, "text/html")):
        return response  # an HTML error page of chalicelib/web is already an answer
    body = response.body
    if isinstance(body, dict) and set(body) == {"Code", "Message"}:
        if response.status_code >= 500:
            log.error("internal error on %s: %s", info.path, body.get("Message"))
        return from_chalice_body(response.status_code, body, instance_url(info), response.headers)
    if isinstance(body, dict) and body:
        return response  # a view's deliberate body (e.g. /health's 503 report)
    return problem(response.status_code, instance=instance_url(info))
