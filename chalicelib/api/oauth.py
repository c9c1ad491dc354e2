"""The OAuth2 token and revocation endpoints (the authorization pages are in `web/oauth.py`)."""

from __future__ import annotations

from urllib.parse import urlsplit

from chalice import Blueprint, Response

from chalicelib.api.context import current_request_info
from chalicelib.api.problems import PROBLEM_JSON
from chalicelib.api.routing import endpoint

routes = Blueprint(__name__)

OAUTH_ERROR_TITLES = {
    "invalid_client": "Invalid client",
    "invalid_request": "Bad Request",
    "invalid_scope": "Invalid scope",
    "unauthorized_client": "Unauthorized client",
    "unsupported_grant_type": "Unsupported grant type",
    "invalid_grant": "Invalid grant",
    "unsupported_token_type": "Unsupported token type",
}


def _endpoint_uri(headers: dict[str, str], default_path: str) -> str:
    """The URL the client called (authlib checks its scheme)."""
    from chalicelib.config import get_settings

    settings = get_settings()
    external = urlsplit(settings.external_server_url)
    scheme = headers.get("x-forwarded-proto") or external.scheme
    if not settings.is_deployed:
        # authlib refuses plain http off loopback; API Gateway is HTTPS-only when deployed,
        # and a local or compose setup on http is the developer's choice.
        scheme = "https"
    host = headers.get("host") or external.netloc
    info = current_request_info()
    return f"{scheme}://{host}{info.path if info else default_path}"


def _oauth2_call(function, default_path: str) -> Response:
    from chalicelib.auth import oauth2
    from chalicelib.config import get_settings
    from chalicelib.db import session_scope
    from chalicelib.errors import BadRequestError

    request = routes.current_request
    headers = dict(request.headers)
    uri = _endpoint_uri(headers, default_path)
    try:
        with session_scope() as s:
            result = function(s, uri=uri, headers=headers, body=request.raw_body)
    except BadRequestError as exc:  # undecodable body: still an OAuth2 error to the client
        result = oauth2.TokenResponse(
            400, {"error": "invalid_request", "error_description": exc.detail}, {}
        )
    out_headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    out_headers.update({k: v for k, v in result.headers.items() if k.lower() == "www-authenticate"})
    if result.status == 200:
        return Response(body=result.body, status_code=200, headers=out_headers)
    # OAuth2 clients read `error`; everything else reads problem+json: send both.
    info = current_request_info()
    error = result.body.get("error", "invalid_request")
    description = result.body.get("error_description") or error
    body = {
        "type": "about:blank",
        "title": OAUTH_ERROR_TITLES.get(error, "Bad Request"),
        "status": result.status,
        "detail": description,
        "instance": get_settings().external_server_url + (info.full_path if info else ""),
        "extra_info": {},
        "error": error,
        "error_description": description,
    }
    return Response(
        body=body, status_code=result.status, headers={**out_headers, "Content-Type": PROBLEM_JSON}
    )


@endpoint(
    routes,
    "/oauth2/token",
    methods=["POST"],
    public=True,
    content_types=["application/x-www-form-urlencoded"],
)
def token():
    from chalicelib.auth import oauth2

    return _oauth2_call(oauth2.token_endpoint, "/oauth2/token")


@endpoint(
    routes,
    "/oauth2/revoke",
    methods=["POST"],
    public=True,
    content_types=["application/x-www-form-urlencoded"],
)
def revoke():
    """RFC 7009 token revocation."""
    from chalicelib.auth import oauth2

    return _oauth2_call(oauth2.revocation_endpoint, "/oauth2/revoke")
