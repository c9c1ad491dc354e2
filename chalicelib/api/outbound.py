"""Outbound webhooks: a user or a registry registers an HTTPS endpoint that receives the
transitions of one workflow, or of all its workflows, as signed CloudEvents (or Slack
messages). The signing secret is shown once, in the 201 answer."""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api import serializers
from chalicelib.api.context import current_principal
from chalicelib.api.routing import endpoint, json_body
from chalicelib.auth import scopes as S

routes = Blueprint(__name__)


@endpoint(routes, "/webhook-endpoints", scopes=[S.WORKFLOW_READ])
def list_endpoints():
    from chalicelib.db import session_scope
    from chalicelib.services import outbound

    with session_scope() as s:
        items = [
            outbound.endpoint_body(s, e) for e in outbound.list_endpoints(s, current_principal())
        ]
    return serializers.listing(items)


@endpoint(routes, "/webhook-endpoints", methods=["POST"], scopes=[S.WORKFLOW_WRITE])
def create_endpoint():
    from chalicelib.db import session_scope
    from chalicelib.services import outbound

    body = json_body(routes.current_request)
    with session_scope() as s:
        created, secret = outbound.create_endpoint(s, current_principal(), body)
        result = outbound.endpoint_body(s, created)
    if secret is not None:
        result["secret"] = secret  # shown this once; only its parameter-store key is kept
    return Response(body=result, status_code=201)


@endpoint(routes, "/webhook-endpoints/{endpoint_uuid}", scopes=[S.WORKFLOW_READ])
def get_endpoint(endpoint_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import outbound

    with session_scope() as s:
        return outbound.endpoint_body(
            s, outbound.get_endpoint(s, current_principal(), endpoint_uuid)
        )


@endpoint(
    routes, "/webhook-endpoints/{endpoint_uuid}", methods=["PATCH"], scopes=[S.WORKFLOW_WRITE]
)
def update_endpoint(endpoint_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import outbound

    body = json_body(routes.current_request)
    with session_scope() as s:
        changed = outbound.update_endpoint(s, current_principal(), endpoint_uuid, body)
        return outbound.endpoint_body(s, changed)


@endpoint(
    routes, "/webhook-endpoints/{endpoint_uuid}", methods=["DELETE"], scopes=[S.WORKFLOW_WRITE]
)
def delete_endpoint(endpoint_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.services import outbound

    with session_scope() as s:
        outbound.delete_endpoint(s, current_principal(), endpoint_uuid)
    return Response(body="", status_code=204)
