"""The one body of every workflow POST: register now (201), or with `async: true` start a
job and answer 302 to `/jobs/status/<job_id>` (contract §1.3)."""

from __future__ import annotations

from chalice import Response

from chalicelib.api import serializers
from chalicelib.api.context import current_principal, current_request_info
from chalicelib.api.routing import json_body


def workflow_post(request, route: str, params: dict[str, str] | None = None) -> Response:
    """`route` names the POST (chalicelib.services.registration_jobs.ROUTES); `params` are
    its path parameters."""
    from chalicelib.db import session_scope
    from chalicelib.services import registration_jobs as jobs

    body = json_body(request)
    principal = current_principal()
    params = params or {}
    if jobs.wants_async(body):
        from chalicelib.api.middleware import instance_url
        from chalicelib.config import get_settings

        view = jobs.start(
            principal, route, params, body, request_url=instance_url(current_request_info())
        )
        location = get_settings().url_for(f"/jobs/status/{view['job_id']}")
        return Response(body=view, status_code=302, headers={"Location": location})
    with session_scope() as s:
        version = jobs.register(s, principal, route, params, body)
        result = serializers.registered(version)
    return Response(body=result, status_code=201)
