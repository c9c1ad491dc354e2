"""Workflow registries: the public list, the calling registry's record, users and
workflows, and the live index of a registry (contract §1.2 rows 1-10)."""

from __future__ import annotations

from chalice import Blueprint

from chalicelib.api import serializers
from chalicelib.api.context import current_principal
from chalicelib.api.routing import endpoint, query_flag, query_page
from chalicelib.auth import scopes as S

routes = Blueprint(__name__)


def _flags():
    req = routes.current_request
    return {k: query_flag(req, k) for k in ("status", "versions")}


def _listing(entries, flags, page=None):
    from chalicelib.api.routing import encode_cursor

    return serializers.listing(
        [
            serializers.workflow_list_item(
                e,
                with_status=flags["status"],
                with_versions=flags["versions"],
                with_subscriptions=False,
            )
            for e in entries
        ],
        next_cursor=encode_cursor(page.next_after) if page is not None else None,
    )


@endpoint(routes, "/registries", public=True)
def list_registries():
    from chalicelib.db import session_scope
    from chalicelib.services import registries

    with session_scope() as s:
        items = [serializers.registry(r, nested=True) for r in registries.list_registries(s)]
    return serializers.listing(items)


@endpoint(routes, "/registries/current", scopes=[S.REGISTRY_INFO], registry=True)
def current_registry():
    from chalicelib.db import session_scope
    from chalicelib.services import registries

    with session_scope() as s:
        return serializers.registry(registries.get_by_uuid(s, current_principal().registry_uuid))


@endpoint(routes, "/registries/current/users", scopes=[S.REGISTRY_USER], registry_without_user=True)
def current_registry_users():
    from chalicelib.db import session_scope
    from chalicelib.services import users

    with session_scope() as s:
        items = [
            serializers.user(u) for u in users.registry_users(s, current_principal().registry_id)
        ]
    return serializers.listing(items)


@endpoint(routes, "/registries/current/workflows", scopes=[S.REGISTRY_WORKFLOW_READ], registry=True)
def current_registry_workflows():
    from chalicelib.db import session_scope
    from chalicelib.services import workflows

    flags = _flags()
    page = query_page(routes.current_request)
    principal = current_principal()
    with session_scope() as s:
        entries = workflows.list_workflows(
            s,
            principal,
            mode="registry",
            registry_id=principal.registry_id,
            with_status=flags["status"],
            all_versions=flags["versions"],
            page=page,
        )
        return _listing(entries, flags, page)


@endpoint(
    routes,
    "/registries/current/workflows",
    methods=["POST"],
    scopes=[S.REGISTRY_WORKFLOW_WRITE],
    registry=True,
)
def submit_registry_workflow():
    from chalicelib.api.registration import workflow_post
    from chalicelib.services.registration_jobs import REGISTRY

    return workflow_post(routes.current_request, REGISTRY)


@endpoint(routes, "/registries/{registry_uuid}", public=True)
def get_registry(registry_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import registries

    with session_scope() as s:
        return serializers.registry(registries.get_by_uuid(s, registry_uuid))


@endpoint(routes, "/registries/{registry_uuid}/workflows", scopes=[S.USER_WORKFLOW_READ], user=True)
def user_registry_workflows(registry_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import registries, workflows

    flags = _flags()
    page = query_page(routes.current_request)
    principal = current_principal()
    with session_scope() as s:
        registry = registries.get_by_uuid(s, registry_uuid)
        entries = workflows.list_workflows(
            s,
            principal,
            mode="user_registry",
            registry_id=registry.id,
            user_id=principal.user_id,
            with_status=flags["status"],
            all_versions=flags["versions"],
            page=page,
        )
        return _listing(entries, flags, page)


@endpoint(
    routes,
    "/registries/{registry_uuid}/workflows",
    methods=["POST"],
    scopes=[S.USER_WORKFLOW_WRITE],
    user=True,
)
def submit_user_registry_workflow(registry_uuid: str):
    from chalicelib.api.registration import workflow_post
    from chalicelib.services.registration_jobs import USER_REGISTRY

    return workflow_post(routes.current_request, USER_REGISTRY, {"registry_uuid": registry_uuid})


@endpoint(routes, "/registries/{registry_uuid}/index", scopes=[S.USER_WORKFLOW_READ], user=True)
def registry_index(registry_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import registries

    with session_scope() as s:
        registry = registries.get_by_uuid(s, registry_uuid)
        nested = serializers.registry(registry, nested=True)
        items = registries.index(registry)
    return serializers.listing([serializers.index_item(i, nested) for i in items])


@endpoint(
    routes,
    "/registries/{registry_uuid}/index/{registry_workflow_identifier}",
    scopes=[S.USER_WORKFLOW_READ],
    user=True,
)
def registry_index_workflow(registry_uuid: str, registry_workflow_identifier: str):
    from chalicelib.db import session_scope
    from chalicelib.services import registries

    with session_scope() as s:
        registry = registries.get_by_uuid(s, registry_uuid)
        nested = serializers.registry(registry, nested=True)
        item = registries.index_item(registry, registry_workflow_identifier)
    return serializers.single(serializers.index_item(item, nested, detailed=True))
