"""GET /health: the service and its database answer."""

from __future__ import annotations

from chalice import Blueprint, Response

from chalicelib.api.routing import endpoint

routes = Blueprint(__name__)


@endpoint(routes, "/health", public=True)
def health():
    from chalicelib.services import health as service

    report = service.check()
    return Response(
        body=report,
        status_code=200 if report["status"] == "healthy" else 503,
        headers={"Cache-Control": "no-store"},
    )
