"""How routes are declared: authorization and error rendering in one decorator, so each
view only parses, calls one domain function and serializes."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from chalice import CORSConfig

from chalicelib.api import context
from chalicelib.api.problems import from_error
from chalicelib.errors import BadRequestError, LifeMonitorError, NotFoundError

log = logging.getLogger(__name__)

# Browsers (the web UI, Swagger UI) send LifeMonitor's `ApiKey` header: allow it.
CORS = CORSConfig(
    allow_origin="*",
    allow_headers=["ApiKey", "X-Request-Id"],
    expose_headers=["X-Request-Id"],
    max_age=600,
)

# Every route, for the OpenAPI check: (path, method) -> security summary.
ROUTES: dict[tuple[str, str], dict[str, Any]] = {}


def endpoint(
    bp,
    path: str,
    methods: Iterable[str] = ("GET",),
    *,
    scopes: Iterable[str] = (),
    public: bool = False,
    anonymous: bool = False,
    user: bool = False,
    registry: bool = False,
    registry_without_user: bool = False,
    content_types: list[str] | None = None,
) -> Callable:
    """Register a view on blueprint `bp`.

    public: no credentials needed or checked (health, docs, token endpoint).
    anonymous: credentials optional; if sent, they must hold `scopes`.
    """
    scopes = tuple(scopes)
    methods = [m.upper() for m in methods]
    read_only_route = set(methods) <= {"GET", "HEAD"}

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def view(**kwargs):
            try:
                if any("\x00" in str(v) for v in kwargs.values()):
                    # API Gateway decodes %00; no id of ours contains NUL (Postgres refuses it).
                    raise NotFoundError("No such resource")
                if not public:
                    from chalicelib.auth.principals import require

                    require(
                        context.current_principal(),
                        scopes,
                        anonymous=anonymous,
                        user=user,
                        registry=registry,
                        registry_without_user=registry_without_user,
                    )
                if read_only_route:
                    from chalicelib import db

                    token = db.read_only.set(True)
                    try:
                        return fn(**kwargs)
                    finally:
                        db.read_only.reset(token)
                return fn(**kwargs)
            except LifeMonitorError as exc:
                from chalicelib.api.middleware import instance_url

                return from_error(exc, instance_url(context.current_request_info()))

        # HEAD wherever GET is served (HTTP semantics): the view runs as for GET and the
        # middleware drops the body. Not listed in ROUTES (the documented operations).
        served = [*methods, "HEAD"] if "GET" in methods and "HEAD" not in methods else methods
        route_kwargs: dict[str, Any] = {"methods": served, "cors": CORS}
        if content_types is not None:
            route_kwargs["content_types"] = content_types
        elif not set(methods) & {"POST", "PUT", "PATCH"}:
            # No body to read: whatever Content-Type a client sends is fine (LifeMonitor and
            # WorkflowHub's clients send some on GETs).
            route_kwargs["content_types"] = ["*/*"]
        bp.route(path, **route_kwargs)(view)
        for method in methods:
            ROUTES[(path, method)] = {
                "public": public,
                "anonymous": anonymous,
                "scopes": list(scopes),
            }
        return view

    return decorate


def json_body(request, *, required: bool = True) -> Any:
    """The JSON body; a clear 400 naming the field rather than Chalice's own error shape
    or a 500 (deep nesting, NUL, lone surrogates and NaN are refused, see safejson)."""
    from chalicelib import safejson

    raw = request.raw_body
    if not raw:
        if required:
            raise BadRequestError("a JSON request body is required")
        return None
    try:
        return safejson.loads(raw)
    except safejson.JSONInputError as exc:
        extra = {"field": exc.field} if exc.field else {}
        raise BadRequestError(f"malformed JSON body: {exc.message}", **extra) from None


def query_flag(request, name: str, default: bool = False) -> bool:
    params = request.query_params or {}
    value = params.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in {"true", "1", "yes", "on"}:
        return True
    if lowered in {"false", "0", "no", "off", ""}:
        return False
    raise BadRequestError(f"query parameter {name!r} must be true or false, got {value!r}")


def query_text(request, name: str, max_length: int = 256) -> str | None:
    params = request.query_params or {}
    value = params.get(name)
    if value is None:
        return None
    if len(value) > max_length or "\x00" in value:
        raise BadRequestError(f"query parameter {name!r} is too long")
    return value.strip() or None


def query_int(request, name: str, default: int, minimum: int = 1, maximum: int = 1000) -> int:
    params = request.query_params or {}
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequestError(f"query parameter {name!r} must be an integer") from None
    if not minimum <= number <= maximum:
        raise BadRequestError(f"query parameter {name!r} must be between {minimum} and {maximum}")
    return number


DEFAULT_PAGE = 100
MAX_PAGE = 1000


def query_page(request):
    """Optional paging of a list (`limit`, `cursor`): None when the client asks for neither
    (LifeMonitor's clients: the whole list, as before)."""
    from chalicelib.services.workflows import Page

    params = request.query_params or {}
    cursor = params.get("cursor")
    if params.get("limit") is None and cursor is None:
        return None
    limit = query_int(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    after = None
    if cursor:
        after = decode_cursor(cursor)
    return Page(limit=limit, after=after)


def encode_cursor(after: int | None) -> str | None:
    """Opaque to clients: where the next page starts."""
    import base64

    if after is None:
        return None
    return base64.urlsafe_b64encode(f"w{after}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    import base64
    import binascii

    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        if len(cursor) > 32 or not text.startswith("w") or not text[1:].isdigit():
            raise ValueError
        return int(text[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequestError(
            "query parameter 'cursor' is not a cursor of this list", field="cursor"
        ) from None
