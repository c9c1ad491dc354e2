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


# Form fields longer than their column are refused before any lookup; others get a cap.
MAX_FIELD_CHARS = 4096


def _check_form(raw: bytes | str | None) -> None:
    """NUL (Postgres refuses it), bytes that are not UTF-8 once percent-decoded, and
    over-long values: a 400 naming the field rather than a database error."""
    from urllib.parse import parse_qsl

    from chalicelib.errors import BadRequestError
    from chalicelib.models import OAuth2Client
    from chalicelib.models.limits import check_length

    if not raw:
        return
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        fields = parse_qsl(text, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise BadRequestError("request body is not UTF-8 form data") from None
    for name, value in fields:
        field = name[:64]
        if "\x00" in name or "\x00" in value:
            raise BadRequestError(f"'{field}' contains a NUL character", field=field)
        if len(value) > MAX_FIELD_CHARS:
            raise BadRequestError(f"'{field}' is too long", field=field)
        if name == "client_id":
            check_length(value, OAuth2Client.client_id, "client_id")


def _check_basic(authorization: str | None) -> None:
    """The same rules for client credentials sent as HTTP Basic."""
    import base64
    import binascii
    from urllib.parse import unquote

    from chalicelib.errors import BadRequestError

    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return
    try:
        pair = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise BadRequestError("malformed Basic credentials") from None
    client_id, _, secret = pair.partition(":")
    for field, text in (("client_id", unquote(client_id)), ("client_secret", unquote(secret))):
        if "\x00" in text or len(text) > MAX_FIELD_CHARS:
            raise BadRequestError(f"'{field}' of the Basic credentials is not valid", field=field)


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
        _check_form(request.raw_body)
        _check_basic(headers.get("authorization"))
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
