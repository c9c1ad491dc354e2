"""Status badges: shields.io flat SVG and shields.io endpoint JSON for public workflows,
versions, suites and instances. Read-only routes: nothing is written."""

from __future__ import annotations

import json

from chalice import Blueprint, Response

from chalicelib.api.routing import endpoint, query_text

routes = Blueprint(__name__)

# Badges change when builds do (the refresh runs every few minutes): caches may keep them
# a little, never for long.
CACHE = "public, max-age=300, stale-while-revalidate=60"


def _respond(badge, kind: str) -> Response:
    if kind == "svg":
        return Response(
            body=badge.svg(),
            status_code=200,
            headers={"Content-Type": "image/svg+xml; charset=utf-8", "Cache-Control": CACHE},
        )
    return Response(
        body=json.dumps(badge.endpoint_json()),
        status_code=200,
        headers={"Content-Type": "application/json", "Cache-Control": CACHE},
    )


def _workflow(wf_uuid: str, version: str | None, kind: str) -> Response:
    from chalicelib.db import session_scope
    from chalicelib.services import badges

    with session_scope() as s:
        return _respond(badges.workflow_badge(s, wf_uuid, version or "latest"), kind)


@endpoint(routes, "/workflows/{wf_uuid}/badge.svg", public=True)
def workflow_svg(wf_uuid: str):
    return _workflow(wf_uuid, query_text(routes.current_request, "version"), "svg")


@endpoint(routes, "/workflows/{wf_uuid}/badge.json", public=True)
def workflow_json(wf_uuid: str):
    return _workflow(wf_uuid, query_text(routes.current_request, "version"), "json")


@endpoint(routes, "/workflows/{wf_uuid}/versions/{wf_version}/badge.svg", public=True)
def version_svg(wf_uuid: str, wf_version: str):
    return _workflow(wf_uuid, wf_version, "svg")


@endpoint(routes, "/workflows/{wf_uuid}/versions/{wf_version}/badge.json", public=True)
def version_json(wf_uuid: str, wf_version: str):
    return _workflow(wf_uuid, wf_version, "json")


def _suite(suite_uuid: str, kind: str) -> Response:
    from chalicelib.db import session_scope
    from chalicelib.services import badges

    with session_scope() as s:
        return _respond(badges.suite_badge(s, suite_uuid), kind)


@endpoint(routes, "/suites/{suite_uuid}/badge.svg", public=True)
def suite_svg(suite_uuid: str):
    return _suite(suite_uuid, "svg")


@endpoint(routes, "/suites/{suite_uuid}/badge.json", public=True)
def suite_json(suite_uuid: str):
    return _suite(suite_uuid, "json")


def _instance(instance_uuid: str, kind: str) -> Response:
    from chalicelib.db import session_scope
    from chalicelib.services import badges

    with session_scope() as s:
        return _respond(badges.instance_badge(s, instance_uuid), kind)


@endpoint(routes, "/instances/{instance_uuid}/badge.svg", public=True)
def instance_svg(instance_uuid: str):
    return _instance(instance_uuid, "svg")


@endpoint(routes, "/instances/{instance_uuid}/badge.json", public=True)
def instance_json(instance_uuid: str):
    return _instance(instance_uuid, "json")
