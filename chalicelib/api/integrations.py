"""Issue checks and the `.lifemonitor.yaml` schema (contract §1.2 rows 22, 23, 48, 49)."""

from __future__ import annotations

import html

from chalice import Blueprint, Response

from chalicelib.api import serializers
from chalicelib.api.routing import endpoint
from chalicelib.errors import BadRequestError, PayloadTooLargeError

routes = Blueprint(__name__)


@endpoint(routes, "/workflows/issues", public=True)
def list_issue_types():
    from chalicelib.issues import list_issues

    return serializers.listing([i.as_dict() for i in list_issues()])


@endpoint(routes, "/workflows/issues.html", public=True)
def list_issue_types_html():
    from urllib.parse import urlsplit

    from chalicelib.issues import list_issues

    params = routes.current_request.query_params or {}
    back = params.get("back")
    # Only http(s) links back: no javascript: URLs in our page (open-redirect/XSS fix).
    if back and urlsplit(back).scheme not in {"http", "https"}:
        back = None
    rows = "".join(
        f"<tr><td><code>{html.escape(i.identifier)}</code></td><td>{html.escape(i.name)}</td>"
        f"<td>{i.description}</td><td>{html.escape(', '.join(i.labels))}</td></tr>"
        for i in list_issues()
    )
    link = f'<p><a href="{html.escape(back, quote=True)}">Back</a></p>' if back else ""
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>LifeMonitor checks</title></head><body><h1>Checks run on submitted "
        "RO-Crates</h1><table><thead><tr><th>Identifier</th><th>Name</th><th>Description</th>"
        f"<th>Labels</th></tr></thead><tbody>{rows}</tbody></table>{link}</body></html>"
    )
    return Response(body=page, headers={"Content-Type": "text/html; charset=utf-8"})


@endpoint(routes, "/integrations/github/config/schema.json", public=True)
def config_schema():
    from chalicelib.lmconfig import SCHEMA

    return SCHEMA


@endpoint(
    routes,
    "/integrations/github/config/validate",
    methods=["POST"],
    public=True,
    content_types=["application/octet-stream"],
)
def validate_config():
    from chalicelib.lmconfig import ConfigParseError, DocumentTooLargeError, validate

    raw = routes.current_request.raw_body or b""
    try:
        result = validate(raw)
    except DocumentTooLargeError as exc:
        raise PayloadTooLargeError(str(exc)) from None
    except ConfigParseError as exc:
        raise BadRequestError(str(exc)) from None
    if result.valid:
        return {"valid": True, "data": result.data}
    return {"valid": False, "message": result.message, "error": result.error}
