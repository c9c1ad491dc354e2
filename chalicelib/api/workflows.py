"""Workflows and their versions, status, RO-Crates and suites (contract §1.2 rows 21-37)."""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api import serializers
from chalicelib.api.context import current_principal
from chalicelib.api.routing import (
    encode_cursor,
    endpoint,
    json_body,
    query_flag,
    query_page,
    query_text,
)
from chalicelib.auth import scopes as S

routes = Blueprint(__name__)

READ = [S.WORKFLOW_READ]
WRITE = [S.WORKFLOW_WRITE]


def _request():
    return routes.current_request


@endpoint(routes, "/workflows", scopes=READ, anonymous=True)
def list_workflows():
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    req = _request()
    flags = {k: query_flag(req, k) for k in ("status", "versions", "subscriptions")}
    page = query_page(req)
    with session_scope() as s:
        entries = workflows.list_workflows(
            s,
            current_principal(),
            mode="visible",
            with_status=flags["status"],
            all_versions=flags["versions"],
            with_subscriptions=flags["subscriptions"],
            page=page,
        )
        items = [
            serializers.workflow_list_item(
                e,
                with_status=flags["status"],
                with_versions=flags["versions"],
                with_subscriptions=flags["subscriptions"],
            )
            for e in entries
        ]
    return serializers.listing(
        items, next_cursor=encode_cursor(page.next_after) if page is not None else None
    )


@endpoint(routes, "/workflows/{wf_uuid}", scopes=READ, anonymous=True)
def get_workflow(wf_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    req = _request()
    with session_scope() as s:
        entry = workflows.get_version(s, current_principal(), wf_uuid, "latest", with_suites=False)
        return serializers.workflow_details(
            entry,
            with_crate=query_flag(req, "ro_crate"),
            previous_versions=query_flag(req, "previous_versions"),
            principal=current_principal(),
        )


@endpoint(routes, "/workflows/{wf_uuid}", methods=["PUT"], scopes=WRITE)
def update_workflow(wf_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    body = json_body(_request())
    with session_scope() as s:
        workflows.update_workflow(s, current_principal(), wf_uuid, body)
    return Response(body="", status_code=204)


@endpoint(routes, "/workflows/{wf_uuid}", methods=["DELETE"], scopes=WRITE)
def delete_workflow(wf_uuid: str):
    from chalicelib import storage
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    with session_scope() as s:
        locations = workflows.delete_workflow(s, current_principal(), wf_uuid)
    storage.remove_crates(locations)
    return Response(body="", status_code=204)


@endpoint(routes, "/workflows/{wf_uuid}/versions", scopes=READ, anonymous=True)
def list_versions(wf_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    with session_scope() as s:
        return serializers.versions_list(workflows.list_versions(s, current_principal(), wf_uuid))


@endpoint(routes, "/workflows/{wf_uuid}/versions/{wf_version}", scopes=READ, anonymous=True)
def get_version(wf_uuid: str, wf_version: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    with session_scope() as s:
        entry = workflows.get_version(
            s, current_principal(), wf_uuid, wf_version, with_suites=False
        )
        return serializers.workflow_details(
            entry, with_crate=query_flag(_request(), "ro_crate"), principal=current_principal()
        )


@endpoint(routes, "/workflows/{wf_uuid}/versions/{wf_version}", methods=["PUT"], scopes=WRITE)
def update_version(wf_uuid: str, wf_version: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    body = json_body(_request())
    with session_scope() as s:
        version, replaced = workflows.update_version(
            s, current_principal(), wf_uuid, wf_version, body
        )
        result = serializers.registered(version) if replaced else None
    if result is not None:
        return Response(body=result, status_code=201)
    return Response(body="", status_code=204)


@endpoint(routes, "/workflows/{wf_uuid}/versions/{wf_version}", methods=["DELETE"], scopes=WRITE)
def delete_version(wf_uuid: str, wf_version: str):
    from chalicelib import storage
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    with session_scope() as s:
        locations = workflows.delete_version(s, current_principal(), wf_uuid, wf_version)
    storage.remove_crates(locations)
    return Response(body="", status_code=204)


@endpoint(routes, "/workflows/{wf_uuid}/status", scopes=READ, anonymous=True)
def workflow_status(wf_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    version = query_text(_request(), "version") or "latest"
    with session_scope() as s:
        entry = workflows.get_version(s, current_principal(), wf_uuid, version)
        return serializers.workflow_status(entry, principal=current_principal())


@endpoint(routes, "/workflows/{wf_uuid}/rocrate/{wf_version}/metadata", scopes=READ, anonymous=True)
def crate_metadata(wf_uuid: str, wf_version: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    with session_scope() as s:
        entry = workflows.get_version(
            s, current_principal(), wf_uuid, wf_version, with_suites=False
        )
        return entry.versions[0].version.crate_metadata or {}


@endpoint(routes, "/workflows/{wf_uuid}/rocrate/{wf_version}/download", scopes=READ, anonymous=True)
def crate_download(wf_uuid: str, wf_version: str):
    from chalicelib import storage
    from chalicelib.db import session_scope
    from chalicelib.errors import GoneError
    from chalicelib.services import workflows

    with session_scope() as s:
        entry = workflows.get_version(
            s, current_principal(), wf_uuid, wf_version, with_suites=False
        )
        version = entry.versions[0].version
        location = version.crate_location
        label = version.version
    data = storage.get_crate(location)
    if data is None:
        raise GoneError(
            f"RO-Crate not found: no stored copy for workflow '{wf_uuid}' (ver.{label})"
        )
    return Response(
        body=data,
        status_code=200,
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f"attachment; filename=rocrate_{wf_uuid}_v{label}.zip",
        },
    )


@endpoint(routes, "/workflows/{wf_uuid}/suites", scopes=READ, anonymous=True)
def workflow_suites(wf_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    req = _request()
    version = query_text(req, "version") or "latest"
    with_status, with_builds = query_flag(req, "status"), query_flag(req, "latest_builds")
    with session_scope() as s:
        entry = workflows.get_version(s, current_principal(), wf_uuid, version)
        items = [
            serializers.test_suite(v, with_status=with_status, with_latest_builds=with_builds)
            for v in entry.versions[0].suites
        ]
    return serializers.listing(items)
