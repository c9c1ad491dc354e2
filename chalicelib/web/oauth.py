"""The OAuth2 pages: our authorization endpoint (consent), the RegistryCodeFlow entry
`/oauth2/authorize/<registry>`, sign-in through a provider (`/oauth2/login/<name>` and its
callback `/oauth2/authorized/<name>`), and what follows a sign-in: choosing a username for
a new identity, or merging two accounts. The token and revocation endpoints are API routes
(`api/oauth.py`)."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlencode

from chalice import Blueprint

from chalicelib.web.render import render
from chalicelib.web.responses import error_page, html, redirect
from chalicelib.web.routing import PageRequest, page
from chalicelib.web.session import login, safe_next

log = logging.getLogger(__name__)

routes = Blueprint(__name__)

LOGIN_STATE = "oauth_login"
PENDING_IDENTITY = "pending_identity"
PENDING_MERGE = "pending_merge"
PENDING_TTL = 900  # seconds a username choice or a merge offer stays open


def _query_pairs(request: PageRequest) -> list[tuple[str, str]]:
    params = request.raw.query_params if request.raw is not None else None
    if not params:
        return []
    return [(k, v) for k in params for v in params.getlist(k)]


def _here(request: PageRequest) -> str:
    """The path and query of this request (without our base path)."""
    from chalicelib.api.context import current_request_info

    info = current_request_info()
    return info.full_path if info is not None else "/"


def _login_redirect(request: PageRequest):
    return redirect("/account/login?" + urlencode({"next": _here(request)}), request.session)


def _signed_in_user(db, request: PageRequest):
    from chalicelib.models import User

    user_id = request.user_id
    return db.get(User, user_id) if user_id is not None else None


# --- our authorization endpoint ------------------------------------------------------------


def _authorization(request: PageRequest, params: list[tuple[str, str]], decision):
    from chalicelib.auth import oauth2
    from chalicelib.db import session_scope

    with session_scope() as db:
        user = _signed_in_user(db, request)
        if user is None:
            return None
        result = oauth2.authorize(db, params, user, decision=decision)
    if result.redirect:
        # 302 as RFC 6749 shows it; the browser follows with a GET.
        return redirect(result.redirect, request.session, status=302)
    if result.consent is not None:
        body = render("consent.html", session=request.session, consent=result.consent)
        return html(body, session=request.session)
    detail = result.error_description or result.error or "invalid request"
    return error_page(
        result.status if 400 <= result.status < 600 else 400,
        f"This authorization request cannot be served: {detail} ({result.error})",
        session=request.session,
        title="Authorization request refused",
    )


@page(routes, "/oauth2/authorize", methods=["GET", "POST"])
def authorize(request: PageRequest):
    if request.method == "POST":
        # The consent form (CSRF token and Origin checked by @page).
        decision = request.form.get("confirm") == "yes"
        params = [
            (k, v)
            for k in request.form
            if k not in {"csrf_token", "confirm"}
            for v in request.form.getlist(k)
        ]
        response = _authorization(request, params, decision)
        if response is None:
            return error_page(
                401, "Your session has ended: sign in and try again", session=request.session
            )
        return response
    response = _authorization(request, _query_pairs(request), None)
    return response if response is not None else _login_redirect(request)


@page(routes, "/oauth2/authorize/{registry}")
def authorize_registry(request: PageRequest, registry: str):
    """RegistryCodeFlow: the person signs in through registry `registry` first (so that we
    know who they are there), then the normal authorization runs."""
    from chalicelib.db import session_scope
    from chalicelib.models import Identity, Registry

    with session_scope() as db:
        reg = db.query(Registry).filter_by(client_name=registry).one_or_none()
        if reg is None:
            return error_page(
                404, f"There is no registry named {registry!r}", session=request.session
            )
        linked = request.user_id is not None and (
            db.query(Identity.id).filter_by(user_id=request.user_id, registry_id=reg.id).first()
            is not None
        )
    if not linked:
        target = f"/oauth2/login/{registry}?" + urlencode({"next": _here(request)})
        return redirect(target, request.session)
    response = _authorization(request, _query_pairs(request), None)
    return response if response is not None else _login_redirect(request)


# --- signing in through a provider ---------------------------------------------------------


def _provider_error(request: PageRequest, exc) -> object:
    body = render("provider_error.html", session=request.session, detail=exc.detail)
    return html(body, status=exc.status, session=request.session)


@page(routes, "/oauth2/login/{name}")
def provider_login(request: PageRequest, name: str):
    from chalicelib.auth import providers
    from chalicelib.db import session_scope

    with session_scope() as db:
        provider = providers.get_provider(db, name)
    try:
        provider = providers.check_available(provider)
        url, state = providers.begin_login(provider, safe_next(request.query.get("next"), ""))
    except providers.ProviderError as exc:
        return _provider_error(request, exc)
    request.session[LOGIN_STATE] = state.as_dict()
    return redirect(url, request.session, status=302)


@page(routes, "/oauth2/authorized/{name}")
def provider_callback(request: PageRequest, name: str):
    from chalicelib.auth import providers
    from chalicelib.db import session_scope
    from chalicelib.services import identities

    with session_scope() as db:
        provider = providers.get_provider(db, name)
    state = providers.LoginState.from_dict(request.session.pop(LOGIN_STATE, None))
    try:
        found = providers.complete_login(provider, state, request.query)
    except providers.ProviderError as exc:
        return _provider_error(request, exc)
    next_url = state.next if state is not None else None
    with session_scope() as db:
        outcome = identities.sign_in(db, found, request.user_id)
    if outcome.kind == "login":
        login(request.session, outcome.user_id, outcome.username)
        return redirect(safe_next(next_url), request.session)
    if outcome.kind == "linked":
        return redirect(safe_next(next_url), request.session)
    if outcome.kind == "register":
        request.session[PENDING_IDENTITY] = {
            **outcome.pending,
            "proposed": outcome.username,
            "label": provider.label,
            "next": next_url,
            "created": time.time(),
        }
        return redirect("/account/register_identity", request.session)
    request.session[PENDING_MERGE] = {
        "other_user_id": outcome.other_user_id,
        "other_username": outcome.other_username,
        "label": provider.label,
        "next": next_url,
        "created": time.time(),
    }
    return redirect("/account/merge", request.session)


# --- after a sign-in: a new identity, or a merge --------------------------------------------


def _pending(request: PageRequest, key: str) -> dict | None:
    value = request.session.get(key)
    if not isinstance(value, dict) or time.time() - float(value.get("created", 0)) > PENDING_TTL:
        return None
    return value


def _register_form(
    request: PageRequest, pending: dict, *, username: str, error=None, status=200, not_found=False
):
    body = render(
        "register_identity.html",
        session=request.session,
        provider_label=pending.get("label") or pending.get("provider"),
        identity_name=pending.get("name"),
        username=username,
        error=error,
        not_found=not_found,
    )
    return html(body, status=status, session=request.session)


def _no_pending_sign_in(request: PageRequest):
    return error_page(
        400,
        "There is no sign-in waiting for a username (it may have expired): sign in again",
        session=request.session,
        title="Nothing to register",
    )


@page(routes, "/account/register_identity", methods=["GET", "POST"])
def register_identity(request: PageRequest):
    from chalicelib.db import session_scope
    from chalicelib.errors import BadRequestError, ConflictError
    from chalicelib.services import identities

    pending = _pending(request, PENDING_IDENTITY)
    if pending is None:
        return _no_pending_sign_in(request)
    if request.method == "GET":
        return _register_form(request, pending, username=pending.get("proposed") or "")
    username = request.form.text("username", 128)
    try:
        with session_scope() as db:
            user = identities.register_identity(db, pending, username)
            user_id, name = user.id, user.username
    except (BadRequestError, ConflictError) as exc:
        return _register_form(
            request, pending, username=username, error=exc.detail, status=exc.status
        )
    next_url = pending.get("next")
    login(request.session, user_id, name)
    return redirect(safe_next(next_url), request.session)


@page(routes, "/account/identity_not_found")
def identity_not_found(request: PageRequest):
    """LifeMonitor's sign-in path for an unknown identity: the same choice of username."""
    pending = _pending(request, PENDING_IDENTITY)
    if pending is None:
        return _no_pending_sign_in(request)
    return _register_form(request, pending, username=pending.get("proposed") or "", not_found=True)


@page(routes, "/account/merge", methods=["GET", "POST"])
def merge(request: PageRequest):
    from chalicelib.db import session_scope
    from chalicelib.services import identities

    if request.user_id is None:
        return _login_redirect(request)
    pending = _pending(request, PENDING_MERGE)
    if pending is None:
        return error_page(
            400,
            "There is no merge waiting (it may have expired): sign in with the other "
            "account's provider again",
            session=request.session,
            title="Nothing to merge",
        )
    if request.method == "GET":
        body = render(
            "merge.html",
            session=request.session,
            provider_label=pending.get("label"),
            other_username=pending.get("other_username"),
        )
        return html(body, session=request.session)
    request.session.pop(PENDING_MERGE, None)
    if request.form.get("confirm") != "yes":
        return redirect("/account/profile", request.session)
    with session_scope() as db:
        identities.merge_accounts(db, request.user_id, int(pending["other_user_id"]))
    log.info("account %s merged into %s", pending["other_user_id"], request.user_id)
    return redirect(safe_next(pending.get("next")), request.session)
