"""How pages are declared: `@page(routes, "/path", methods=[...])` gives the view a
`PageRequest` (session, form, query), checks the CSRF token and the Origin of every POST,
and renders errors as HTML pages."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

from chalicelib.errors import BadRequestError, ForbiddenError, LifeMonitorError
from chalicelib.web.session import WebSession, check_csrf, load_session

log = logging.getLogger(__name__)


class UnsupportedMediaError(LifeMonitorError):
    status = 415
    title = "Unsupported Media Type"


FORM = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 64 * 1024

#: Every page route, (path, method): the web's, kept apart from the API's `ROUTES` (pages
#: are not API operations and are not in openapi.json).
PAGES: set[tuple[str, str]] = set()


class FormData(dict):
    """Form fields: `form["name"]` / `.get` give the first value, `.getlist` all."""

    def __init__(self, pairs: dict[str, list[str]]) -> None:
        super().__init__({k: v[0] for k, v in pairs.items() if v})
        self._lists = pairs

    def getlist(self, name: str) -> list[str]:
        return list(self._lists.get(name, []))

    def text(self, name: str, max_length: int = 1024) -> str:
        """A stripped single-line field, "" when absent; too long or NUL → 400."""
        value = self.get(name, "")
        if len(value) > max_length or "\x00" in value:
            raise BadRequestError(f"the field {name!r} is too long or malformed")
        return value.strip()


class LoginRequired(Exception):
    """Raised by a page that needs a signed-in user: the visitor goes to the login page
    and comes back afterwards."""


@dataclass
class PageRequest:
    method: str
    headers: Any
    query: dict[str, str]
    form: FormData
    session: WebSession
    raw: Any = field(repr=False, default=None)  # the Chalice request

    path: str = "/"

    @property
    def user_id(self) -> int | None:
        return self.session.user_id

    def require_user(self) -> int:
        """The signed-in user's id, or off to the login page."""
        if self.session.user_id is None:
            raise LoginRequired()
        return self.session.user_id

    @property
    def principal(self):
        """The signed-in user as the services' principal (anonymous when signed out)."""
        from chalicelib.auth.principals import ANONYMOUS, Principal

        if self.session.user_id is None:
            return ANONYMOUS
        return Principal(
            method="session", user_id=self.session.user_id, username=self.session.get("username")
        )

    @property
    def here(self) -> str:
        """This page's path and query, for `next`."""
        from urllib.parse import urlencode

        return f"{self.path}?{urlencode(self.query)}" if self.query else self.path


def parse_form(raw_body: bytes | None) -> FormData:
    if not raw_body:
        return FormData({})
    if len(raw_body) > MAX_FORM_BYTES:
        raise BadRequestError("the form is too large")
    try:
        text = raw_body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError("the form is not UTF-8") from None
    return FormData(parse_qs(text, keep_blank_values=True, max_num_fields=200))


def check_origin(headers) -> None:
    """A browser's cross-site POST names its origin: refuse any but ours (defence in depth
    beside the CSRF token)."""
    from urllib.parse import urlsplit

    from chalicelib.config import get_settings

    origin = (headers or {}).get("origin")
    if not origin or origin == "null":
        return  # non-browser clients and privacy-stripped origins rely on the token
    ours = urlsplit(get_settings().external_server_url)
    theirs = urlsplit(origin)
    host = (headers or {}).get("host")
    if (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc):
        return
    if host and theirs.netloc == host:
        return  # served under another name than EXTERNAL_SERVER_URL (make run, proxies)
    raise ForbiddenError("Cross-site form submissions are not accepted")


def _request_path(current) -> str:
    """The path asked for, without the API Gateway stage (as our links write it)."""
    from chalicelib.api.context import current_request_info

    info = current_request_info()
    return info.path if info is not None else current.path


def page(bp, path: str, methods: Iterable[str] = ("GET",), *, csrf: bool = True) -> Callable:
    """Register a page view `fn(request: PageRequest, **path_params) -> Response`."""
    methods = [m.upper() for m in methods]

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def view(**kwargs):
            from chalicelib.web.responses import error_page

            session = WebSession()
            request = None
            try:
                current = bp.current_request
                session = load_session(current.headers)
                form = FormData({})
                if current.method == "POST":
                    ctype = (current.headers or {}).get("content-type") or ""
                    if ctype.split(";")[0].strip().lower() != FORM:
                        raise UnsupportedMediaError(f"a form post must be sent as {FORM}")
                    form = parse_form(current.raw_body)
                    if csrf:
                        try:
                            check_origin(current.headers)
                            check_csrf(session, form.get("csrf_token"))
                        except ForbiddenError as exc:
                            # No cookie in this answer: a cross-site post (which carries
                            # none) must not replace the visitor's session, i.e. log
                            # them out.
                            refused = error_page(403, exc.detail, session=session)
                            refused.headers.pop("Set-Cookie", None)
                            return refused
                request = PageRequest(
                    # HEAD is a GET whose body the middleware drops.
                    method="GET" if current.method == "HEAD" else current.method,
                    headers=current.headers,
                    query=dict(current.query_params or {}),
                    form=form,
                    session=session,
                    raw=current,
                    path=_request_path(current),
                )
                return fn(request, **kwargs)
            except LoginRequired:
                from chalicelib.web.responses import redirect
                from chalicelib.web.session import logout

                if session.user_id is not None:
                    logout(session)  # the account is gone
                here = request.here if request is not None else "/"
                target = "/account/login?" + urlencode({"next": here})
                return redirect(target, session=session)
            except LifeMonitorError as exc:
                return error_page(exc.status, exc.detail or exc.title, session=session)
            except Exception:
                log.exception("unhandled error on page %s", path)
                return error_page(
                    500, "An internal error occurred; it has been logged", session=session
                )

        # Any Content-Type reaches the view (a GET has none, which Chalice takes for JSON);
        # the view checks a POST's itself, to answer with a page.
        # HEAD wherever GET is served (HTTP semantics), as the API's routes do.
        served = [*methods, "HEAD"] if "GET" in methods and "HEAD" not in methods else methods
        bp.route(path, methods=served, content_types=["*/*"])(view)
        PAGES.update((path, method) for method in served)
        return view

    return decorate
