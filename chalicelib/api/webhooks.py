"""Inbound CI webhooks: ``POST /webhooks/github``, ``/webhooks/jenkins``, ``/webhooks/gitlab``.

Public routes: callers are authenticated by the delivery's signature or shared token (see
`chalicelib.services.webhooks`), never by our credentials. Answers: ``200`` for GitHub's
``ping``, ``202 {"matched", "refreshed", "queued", "deferred", "failed", "event", ...}``
otherwise (``"ignored": true`` for events we do not act on); problems for 400, 401, 413
and 503 (no secret configured).
"""

from __future__ import annotations

from collections.abc import Callable

from chalice import Blueprint, Response

from chalicelib.api.problems import problem
from chalicelib.api.routing import endpoint
from chalicelib.errors import LifeMonitorError

routes = Blueprint(__name__)

GITHUB_TYPES = ["application/json", "application/x-www-form-urlencoded"]
JSON_TYPES = ["application/json"]


def _raw_body() -> bytes:
    raw = routes.current_request.raw_body
    if raw is None:
        return b""
    return raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)


def _instance() -> str | None:
    """The problem's `instance`: our URL *without* the query (it may hold a token)."""
    from chalicelib.api import context
    from chalicelib.config import ConfigError, get_settings

    info = context.current_request_info()
    if info is None:
        return None
    try:
        return get_settings().external_server_url + info.path
    except ConfigError:
        return info.path


def _answer(handle: Callable[[], object]) -> Response:
    try:
        outcome = handle()
    except LifeMonitorError as exc:
        return problem(
            exc.status,
            exc.title,
            exc.detail,
            instance=_instance(),
            extra_info=exc.extra_info,
            headers={"Cache-Control": "no-store"},
        )
    return Response(
        body=outcome.as_dict(),
        status_code=200 if outcome.ping else 202,
        headers={"Cache-Control": "no-store"},
    )


@endpoint(routes, "/webhooks/github", methods=["POST"], public=True, content_types=GITHUB_TYPES)
def github_webhook():
    from chalicelib.services import webhooks

    request = routes.current_request
    return _answer(lambda: webhooks.handle_github(request.headers, _raw_body()))


@endpoint(routes, "/webhooks/jenkins", methods=["POST"], public=True, content_types=JSON_TYPES)
def jenkins_webhook():
    from chalicelib.services import webhooks

    request = routes.current_request
    return _answer(
        lambda: webhooks.handle_jenkins(request.headers, request.query_params, _raw_body())
    )


@endpoint(routes, "/webhooks/gitlab", methods=["POST"], public=True, content_types=JSON_TYPES)
def gitlab_webhook():
    from chalicelib.services import webhooks

    request = routes.current_request
    return _answer(lambda: webhooks.handle_gitlab(request.headers, _raw_body()))
