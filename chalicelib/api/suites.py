"""Test suites (contract §1.2 rows 38-42)."""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api import serializers
from chalicelib.api.context import current_principal
from chalicelib.api.routing import endpoint, json_body, query_flag
from chalicelib.auth import scopes as S

routes = Blueprint(__name__)


@endpoint(routes, "/suites/{suite_uuid}", scopes=[S.WORKFLOW_READ], anonymous=True)
def get_suite(suite_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    req = routes.current_request
    with session_scope() as s:
        view = workflows.get_suite(s, current_principal(), suite_uuid)
        return serializers.test_suite(
            view,
            nested=False,
            with_status=query_flag(req, "status"),
            with_latest_builds=query_flag(req, "latest_builds"),
        )


@endpoint(routes, "/suites/{suite_uuid}", methods=["PUT"], scopes=[S.WORKFLOW_WRITE])
def update_suite(suite_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    body = json_body(routes.current_request)
    with session_scope() as s:
        workflows.update_suite(s, current_principal(), suite_uuid, body)
    return Response(body="", status_code=204)


@endpoint(routes, "/suites/{suite_uuid}/status", scopes=[S.WORKFLOW_READ], anonymous=True)
def suite_status(suite_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    with session_scope() as s:
        return serializers.suite_status(workflows.get_suite(s, current_principal(), suite_uuid))


@endpoint(routes, "/suites/{suite_uuid}/instances", scopes=[S.WORKFLOW_READ], anonymous=True)
def suite_instances(suite_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    with session_scope() as s:
        view = workflows.get_suite(s, current_principal(), suite_uuid)
        return serializers.listing([serializers.test_instance(i) for i in view.instances])


@endpoint(routes, "/suites/{suite_uuid}/instances", methods=["POST"], scopes=[S.WORKFLOW_WRITE])
def add_instance(suite_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    body = json_body(routes.current_request)
    with session_scope() as s:
        instance = workflows.add_instance(s, current_principal(), suite_uuid, body)
        result = {"uuid": instance.uuid}
    return Response(body=result, status_code=201)
