"""The current user: profile, workflows, subscriptions, notifications; registry users'
workflows (contract §1.2 rows 11-20, 27-29)."""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api import serializers
from chalicelib.api.context import current_principal
from chalicelib.api.routing import endpoint, json_body, query_flag, query_page
from chalicelib.auth import scopes as S

routes = Blueprint(__name__)


def _flags():
    req = routes.current_request
    return {k: query_flag(req, k) for k in ("status", "versions", "subscriptions")}


def _listing(entries, flags, page=None):
    from chalicelib.api.routing import encode_cursor

    return serializers.listing(
        [
            serializers.workflow_list_item(
                e,
                with_status=flags["status"],
                with_versions=flags["versions"],
                with_subscriptions=flags["subscriptions"],
            )
            for e in entries
        ],
        next_cursor=encode_cursor(page.next_after) if page is not None else None,
    )


@endpoint(routes, "/users/current", scopes=[S.USER_PROFILE], user=True)
def current_user():
    from chalicelib.db import session_scope
    from chalicelib.services import users

    with session_scope() as s:
        return serializers.user_profile(users.profile(s, current_principal()))


@endpoint(routes, "/users/current/workflows", scopes=[S.USER_WORKFLOW_READ], user=True)
def current_user_workflows():
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    flags = _flags()
    page = query_page(routes.current_request)
    principal = current_principal()
    with session_scope() as s:
        entries = workflows.list_workflows(
            s,
            principal,
            mode="user",
            user_id=principal.user_id,
            with_status=flags["status"],
            all_versions=flags["versions"],
            with_subscriptions=flags["subscriptions"],
            page=page,
        )
        return _listing(entries, flags, page)


@endpoint(
    routes, "/users/current/workflows", methods=["POST"], scopes=[S.USER_WORKFLOW_WRITE], user=True
)
def submit_user_workflow():
    from chalicelib.api.registration import workflow_post
    from chalicelib.services.registration_jobs import USER

    return workflow_post(routes.current_request, USER)


@endpoint(routes, "/users/current/subscriptions", scopes=[S.USER_WORKFLOW_READ], user=True)
def current_user_subscriptions():
    from chalicelib.db import session_scope
    from chalicelib.services import subscriptions

    with session_scope() as s:
        items = [
            serializers.subscription(x)
            for x in subscriptions.list_subscriptions(s, current_principal())
        ]
    body = serializers.listing(items)
    body["links"] = None  # ListOfSubscriptions emits "links": null (contract §1.4)
    return body


@endpoint(routes, "/users/current/notifications", scopes=[S.USER_PROFILE], user=True)
def current_user_notifications():
    from chalicelib.db import session_scope
    from chalicelib.services import subscriptions

    with session_scope() as s:
        rows = subscriptions.list_notifications(s, current_principal())
        items = [serializers.notification(un, n) for un, n in rows]
    return serializers.listing(items)


@endpoint(
    routes, "/users/current/notifications", methods=["PUT"], scopes=[S.USER_PROFILE], user=True
)
def mark_notifications_read():
    from chalicelib.db import session_scope
    from chalicelib.services import subscriptions

    body = json_body(routes.current_request)
    with session_scope() as s:
        subscriptions.mark_read(s, current_principal(), body)
    return Response(body="", status_code=204)


@endpoint(
    routes, "/users/current/notifications", methods=["PATCH"], scopes=[S.USER_PROFILE], user=True
)
def delete_notifications():
    from chalicelib.db import session_scope
    from chalicelib.services import subscriptions

    body = json_body(routes.current_request)
    with session_scope() as s:
        subscriptions.delete_notifications(s, current_principal(), body)
    return Response(body="", status_code=204)


@endpoint(
    routes,
    "/users/current/notifications/{notification_uuid}",
    methods=["DELETE"],
    scopes=[S.USER_PROFILE],
    user=True,
)
def delete_notification(notification_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import subscriptions

    with session_scope() as s:
        subscriptions.delete_notification(s, current_principal(), notification_uuid)
    return Response(body="", status_code=204)


@endpoint(
    routes, "/users/{user_id}/workflows", scopes=[S.REGISTRY_USER_WORKFLOW_READ], registry=True
)
def registry_user_workflows(user_id: str):
    from chalicelib.db import session_scope
    from chalicelib.services import users, workflows

    flags = _flags()
    page = query_page(routes.current_request)
    principal = current_principal()
    with session_scope() as s:
        user = users.registry_user(s, principal, user_id)
        entries = workflows.list_workflows(
            s,
            principal,
            mode="user",
            user_id=user.id,
            with_status=flags["status"],
            all_versions=flags["versions"],
            page=page,
        )
        return _listing(entries, {**flags, "subscriptions": False}, page)


@endpoint(
    routes,
    "/users/{user_id}/workflows",
    methods=["POST"],
    scopes=[S.REGISTRY_USER_WORKFLOW_WRITE],
    registry=True,
)
def submit_registry_user_workflow(user_id: str):
    from chalicelib.api.registration import workflow_post
    from chalicelib.services.registration_jobs import REGISTRY_USER

    return workflow_post(routes.current_request, REGISTRY_USER, {"user_id": user_id})


@endpoint(
    routes, "/workflows/{wf_uuid}/subscribe", methods=["POST"], scopes=[S.WORKFLOW_WRITE], user=True
)
def subscribe(wf_uuid: str):
    return _subscribe(wf_uuid, None)


@endpoint(
    routes, "/workflows/{wf_uuid}/subscribe", methods=["PUT"], scopes=[S.WORKFLOW_WRITE], user=True
)
def subscribe_events(wf_uuid: str):
    return _subscribe(wf_uuid, json_body(routes.current_request))


def _subscribe(wf_uuid: str, events):
    from chalicelib.db import session_scope
    from chalicelib.services import subscriptions

    with session_scope() as s:
        sub, changed = subscriptions.subscribe(s, current_principal(), wf_uuid, events)
        body = serializers.subscription(sub)
    # LifeMonitor answered 204 to a repeated subscribe; the subscription is what a
    # client wants either way: 201 when created or changed, 200 when already so.
    return Response(body=body, status_code=201 if changed else 200)


@endpoint(
    routes,
    "/workflows/{wf_uuid}/unsubscribe",
    methods=["POST"],
    scopes=[S.WORKFLOW_WRITE],
    user=True,
)
def unsubscribe(wf_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import subscriptions

    with session_scope() as s:
        subscriptions.unsubscribe(s, current_principal(), wf_uuid)
    return Response(body="", status_code=204)
