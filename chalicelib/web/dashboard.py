"""The dashboard (the signed-in user's and the public workflows, with their status) and a
workflow's page (versions, suites, instances, latest builds, links to the CI). They call
the services the API calls, under the same access rules."""

from __future__ import annotations

import re

from chalice import Blueprint

from chalicelib.errors import NotFoundError
from chalicelib.web.render import render
from chalicelib.web.responses import html, redirect
from chalicelib.web.routing import PageRequest, page

routes = Blueprint(__name__)

_UUID = re.compile(r"^[0-9a-fA-F-]{1,64}$")
BUILDS_SHOWN = 5


def _db():
    from chalicelib.db import session_scope

    return session_scope()


@page(routes, "/dashboard")
def dashboard(request: PageRequest):
    from chalicelib.services import workflows

    principal = request.principal
    with _db() as db:
        entries = workflows.list_workflows(db, principal, mode="visible", with_status=True)
        mine: set[int] = set()
        if principal.user_id is not None:
            own = workflows.list_workflows(
                db, principal, mode="user", user_id=principal.user_id, with_subscriptions=True
            )
            mine = {e.workflow.id for e in own}
        sizes = workflows.version_sizes(db, [e.latest.version.id for e in entries])
        rows = [_row(e, sizes.get(e.latest.version.id, (0, 0))) for e in entries]
        body = render(
            "dashboard.html",
            session=request.session,
            mine=[r for r in rows if r["id"] in mine],
            public=[r for r in rows if r["id"] not in mine],
        )
    return html(body, session=request.session)


def _row(entry, size: tuple[int, int]) -> dict:
    latest = entry.latest
    # Lists carry the stored status (kept by status_upkeep), not the suites to fold.
    status = latest.stored if latest.stored is not None else latest.status()
    return {
        "id": entry.workflow.id,
        "uuid": entry.workflow.uuid,
        "name": entry.workflow.name or latest.version.name or entry.workflow.uuid,
        "version": latest.version.version,
        "public": entry.workflow.public,
        "status": status.aggregate_test_status,
        "reason": status.reason,
        "suites": size[0],
        "instances": size[1],
    }


def _workflow_page(request: PageRequest, uuid: str, version: str | None):
    from chalicelib.services import workflows
    from chalicelib.testing.links import instance_link

    if not _UUID.match(uuid or ""):
        raise NotFoundError(f"No workflow {uuid!r}")
    principal = request.principal
    with _db() as db:
        entry = workflows.get_version(db, principal, uuid, version or "latest")
        chosen = entry.versions[0]
        suites = []
        for suite in chosen.suites:
            instances = []
            for view in suite.instances:
                _, builds = workflows.latest_builds(
                    db, principal, view.instance.uuid, limit=BUILDS_SHOWN
                )
                instances.append(
                    {
                        "view": view,
                        "link": instance_link(
                            view.service.type, view.service.url, view.instance.resource
                        ),
                        "builds": builds,
                    }
                )
            suites.append({"suite": suite.suite, "status": suite.status(), "instances": instances})
        body = render(
            "workflow.html",
            session=request.session,
            workflow=entry.workflow,
            chosen=chosen,
            status=chosen.status(),
            versions=sorted(entry.versions, key=lambda v: v.version.created, reverse=True),
            suites=suites,
        )
    return html(body, session=request.session)


@page(routes, "/workflow/{uuid}")
def workflow_page(request: PageRequest, uuid: str):
    return _workflow_page(request, uuid, request.query.get("version"))


def matrix_params(path: str) -> dict[str, str]:
    """`/workflow;uuid=X;version=Y` → {"uuid": "X", "version": "Y"} (WorkflowHub's links
    to LifeMonitor's dashboard use these matrix parameters)."""
    from urllib.parse import unquote

    segment = path.rstrip("/").rsplit("/", 1)[-1]
    params = {}
    for part in segment.split(";")[1:]:
        key, sep, value = part.partition("=")
        if sep:
            params[unquote(key)] = unquote(value)
    return params


@page(routes, "/workflow")
def workflow_matrix_page(request: PageRequest):
    """`/workflow;uuid=<uuid>` where the gateway routes it here (chalice local)."""
    params = matrix_params(request.path)
    if not params.get("uuid"):
        return redirect("/dashboard", session=request.session)
    return _workflow_page(request, params["uuid"], params.get("version"))
