"""HTML and redirect responses for the pages, with the session cookie when it changed.
Requests authenticated by an API key or a bearer token never get a cookie."""

from __future__ import annotations

import logging
from http import HTTPStatus

from chalice import Response

from chalicelib.web.session import WebSession, session_cookie

log = logging.getLogger(__name__)

HTML = "text/html; charset=utf-8"
# Pages show per-user data and one-time secrets: never cached, never framed.
PAGE_HEADERS = {
    "Content-Type": HTML,
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self' http: https:; base-uri 'none'"
    ),
}


def _with_cookie(headers: dict[str, str], session: WebSession | None) -> dict[str, str]:
    if session is None or not session.modified:
        return headers
    from chalicelib.api.context import current_principal

    if not current_principal().is_anonymous:
        return headers  # API-key / Bearer calls are stateless
    headers["Set-Cookie"] = session_cookie(session)
    return headers


def html(body: str, status: int = 200, session: WebSession | None = None) -> Response:
    return Response(
        body=body, status_code=status, headers=_with_cookie(dict(PAGE_HEADERS), session)
    )


def redirect(location: str, session: WebSession | None = None, status: int = 303) -> Response:
    """See other (303: the browser follows with a GET, also after a form post). A path of
    ours gets the base path of EXTERNAL_SERVER_URL; absolute URLs (a login provider's) are
    kept."""
    if location.startswith("/") and not location.startswith("//"):
        from chalicelib.web.render import base_path

        location = base_path() + location
    headers = {"Location": location, "Cache-Control": "no-store"}
    return Response(body="", status_code=status, headers=_with_cookie(headers, session))


def error_page(
    status: int, detail: str | None = None, session: WebSession | None = None, title=None
) -> Response:
    """An error as an HTML page (pages never answer problem+json)."""
    from chalicelib.web.render import render

    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = render(
        "error.html",
        session=session,
        error_title=title or phrase,
        detail=detail or phrase,
        status=status,
    )
    return html(body, status=status, session=session)
