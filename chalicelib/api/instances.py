"""Test instances and their builds (contract §1.2 rows 43-47)."""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api import serializers
from chalicelib.api.context import current_principal
from chalicelib.api.routing import endpoint, json_body, query_int
from chalicelib.auth import scopes as S

routes = Blueprint(__name__)


@endpoint(routes, "/instances/{instance_uuid}", scopes=[S.WORKFLOW_READ], anonymous=True)
def get_instance(instance_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    with session_scope() as s:
        view = workflows.get_instance(s, current_principal(), instance_uuid)
        return serializers.test_instance(view, nested=False)


@endpoint(routes, "/instances/{instance_uuid}", methods=["PUT"], scopes=[S.WORKFLOW_WRITE])
def update_instance(instance_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    body = json_body(routes.current_request)
    with session_scope() as s:
        workflows.update_instance(s, current_principal(), instance_uuid, body)
    return Response(body="", status_code=204)


@endpoint(routes, "/instances/{instance_uuid}", methods=["DELETE"], scopes=[S.WORKFLOW_WRITE])
def delete_instance(instance_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    with session_scope() as s:
        workflows.delete_instance(s, current_principal(), instance_uuid)
    return Response(body="", status_code=204)


@endpoint(
    routes, "/instances/{instance_uuid}/latest-builds", scopes=[S.WORKFLOW_READ], anonymous=True
)
def latest_builds(instance_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    limit = query_int(routes.current_request, "limit", 10, 1, workflows.MAX_BUILDS_LIMIT)
    with session_scope() as s:
        view, builds = workflows.latest_builds(s, current_principal(), instance_uuid, limit)
        return serializers.listing([serializers.build_summary(b, view) for b in builds])


@endpoint(
    routes, "/instances/{instance_uuid}/builds/{build_id}", scopes=[S.WORKFLOW_READ], anonymous=True
)
def get_build(instance_uuid: str, build_id: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    with session_scope() as s:
        view, build = workflows.get_build(s, current_principal(), instance_uuid, build_id)
        body = serializers.build_summary(build, view)
        return serializers.single(body, build.created, build.modified)
