"""Account pages: log in (providers and local accounts), register a local account, log
out, and the profile with its tabs (Account, API keys, OAuth apps, Notifications). Each
handler parses the form, calls one service and renders or redirects."""

from __future__ import annotations

from urllib.parse import urlencode

from chalice import Blueprint

from chalicelib.errors import LifeMonitorError, NotFoundError
from chalicelib.web.render import flash, render
from chalicelib.web.responses import html, redirect
from chalicelib.web.routing import LoginRequired, PageRequest, page
from chalicelib.web.session import login, logout, safe_next

routes = Blueprint(__name__)

TABS = (
    ("accountsTab", "Account"),
    ("apiKeysTab", "API keys"),
    ("oauth2ClientsTab", "OAuth apps"),
    ("notificationsTab", "Notifications"),
)
TAB_IDS = frozenset(t for t, _ in TABS)


def _db():
    from chalicelib.db import session_scope

    return session_scope()


def _account(db, request: PageRequest):
    """The signed-in user's row, or off to the login page (also when it was deleted)."""
    from chalicelib.services import accounts

    try:
        return accounts.get_account(db, request.require_user())
    except NotFoundError:
        raise LoginRequired() from None


def _providers(db):
    """The login providers (WorkflowHub registries, GitHub, LS AAI) with their availability."""
    from chalicelib.auth.providers import list_providers

    return list_providers(db)


def _profile(request: PageRequest, tab: str, status: int = 200, **extra):
    """The profile page on `tab`, with `extra` (a key or secret shown once, an error)."""
    from chalicelib.auth import apikeys
    from chalicelib.auth import scopes as S
    from chalicelib.services import accounts, identities, oauth_apps

    if tab not in TAB_IDS:
        tab = "accountsTab"
    with _db() as db:
        user = _account(db, request)
        # Only what the tab shows is read (the providers' availability costs a request
        # each, cached).
        context = {
            "user": user,
            "tab": tab,
            "tabs": TABS,
            "local_accounts": accounts.local_accounts_enabled(),
            "api_keys": apikeys.list_keys(db, user) if tab == "apiKeysTab" else [],
            "apps": oauth_apps.list_apps(db, user.id) if tab == "oauth2ClientsTab" else [],
            "app_scopes": sorted(oauth_apps.ALLOWED_SCOPES),
            "credential_scopes": sorted(oauth_apps.CLIENT_CREDENTIALS_SCOPES),
            "scope_descriptions": S.DESCRIPTIONS,
            "identities": (identities.list_identities(db, user.id) if tab == "accountsTab" else []),
            "providers": _providers(db) if tab == "accountsTab" else [],
            "sole_workflows": (
                accounts.sole_workflows_count(db, user.id) if tab == "accountsTab" else 0
            ),
            "editing": None,
        }
        edit = request.query.get("edit")
        if tab == "oauth2ClientsTab" and edit and "editing" not in extra:
            context["editing"] = oauth_apps.get_app(db, user.id, edit)
        context.update(extra)
        body = render("profile.html", session=request.session, **context)
    return html(body, status=status, session=request.session)


def _fail(request: PageRequest, tab: str, exc: LifeMonitorError, **extra):
    """Show the tab again with the error; 4xx status, nothing changed."""
    return _profile(
        request, tab, status=exc.status, flash=exc.detail or exc.title, flash_kind="error", **extra
    )


def _back(request: PageRequest, tab: str, message: str | None = None):
    if message:
        flash(request.session, message)
    return redirect("/account/profile?" + urlencode({"currentView": tab}), session=request.session)


# -- login, registration, logout ------------------------------------------------------


@page(routes, "/account/login", methods=["GET", "POST"])
def login_page(request: PageRequest):
    from chalicelib.services import accounts

    source = request.form if request.method == "POST" else request.query
    next_url = safe_next(source.get("next"))
    if request.method == "GET" and request.user_id is not None:
        return redirect(next_url, session=request.session)
    status, error = 200, None
    with _db() as db:
        if request.method == "POST":
            try:
                user = accounts.authenticate_local(
                    db, request.form.text("username", 128), request.form.get("password", "")
                )
            except LifeMonitorError as exc:
                status, error = exc.status, exc.detail or exc.title
            else:
                login(request.session, user.id, user.username)
                return redirect(next_url, session=request.session)
        body = render(
            "login.html",
            session=request.session,
            providers=_providers(db),
            local_accounts=accounts.local_accounts_enabled(),
            next=next_url,
            username=request.form.get("username", ""),
            flash=error,
            flash_kind="error",
        )
    return html(body, status=status, session=request.session)


@page(routes, "/account/register", methods=["GET", "POST"])
def register_page(request: PageRequest):
    from chalicelib.services import accounts

    if not accounts.local_accounts_enabled():
        raise NotFoundError("Local accounts are disabled here: sign in with a provider")
    status, error = 200, None
    if request.method == "POST":
        form = request.form
        try:
            with _db() as db:
                user = accounts.register_local(
                    db,
                    form.text("username", 128),
                    form.get("password", ""),
                    form.get("confirm", ""),
                    form.text("email", 256) or None,
                )
                user_id, username = user.id, user.username
        except LifeMonitorError as exc:
            status, error = exc.status, exc.detail or exc.title
        else:
            login(request.session, user_id, username)
            flash(request.session, f"Welcome, {username}: your account is ready.")
            return redirect(safe_next(form.get("next")), session=request.session)
    body = render(
        "register.html",
        session=request.session,
        form=request.form,
        next=safe_next((request.form or request.query).get("next")),
        flash=error,
        flash_kind="error",
    )
    return html(body, status=status, session=request.session)


@page(routes, "/account/logout", methods=["GET", "POST"])
def logout_page(request: PageRequest):
    source = request.form if request.method == "POST" else request.query
    next_url = safe_next(source.get("next"), default="/")
    if request.method == "POST":
        logout(request.session)
        flash(request.session, "You are logged out.")
        return redirect(next_url, session=request.session)
    if request.user_id is None:
        return redirect(next_url, session=request.session)
    # A GET only asks: logging out is a form post, so no other site can log you out.
    body = render("logout.html", session=request.session, next=next_url)
    return html(body, session=request.session)


# -- profile ----------------------------------------------------------------------------


@page(routes, "/account/profile")
def profile_page(request: PageRequest):
    return _profile(request, request.query.get("currentView", "accountsTab"))


@page(routes, "/account", methods=["GET"])
def account_root(request: PageRequest):
    return redirect("/account/profile", session=request.session)


@page(routes, "/account/create_apikey", methods=["POST"])
def create_apikey(request: PageRequest):
    from chalicelib.services import accounts

    with _db() as db:
        new = accounts.create_api_key(db, _account(db, request))
        key, prefix = new.key, new.record.prefix
    # Shown in this answer only (not kept in the cookie, not in a redirect).
    return _profile(request, "apiKeysTab", new_api_key=key, new_api_key_prefix=prefix)


@page(routes, "/account/delete_apikey", methods=["POST"])
def delete_apikey(request: PageRequest):
    from chalicelib.services import accounts

    try:
        with _db() as db:
            accounts.delete_api_key(db, _account(db, request), request.form.text("apikey", 128))
    except LifeMonitorError as exc:
        return _fail(request, "apiKeysTab", exc)
    return _back(request, "apiKeysTab", "API key deleted.")


@page(routes, "/account/set_password", methods=["POST"])
def set_password(request: PageRequest):
    from chalicelib.services import accounts

    try:
        with _db() as db:
            accounts.set_password(
                db,
                _account(db, request).id,
                request.form.get("password", ""),
                request.form.get("confirm", ""),
            )
    except LifeMonitorError as exc:
        return _fail(request, "accountsTab", exc)
    return _back(request, "accountsTab", "Password changed.")


@page(routes, "/account/delete_account", methods=["POST"])
def delete_account(request: PageRequest):
    from chalicelib import storage
    from chalicelib.services import accounts

    try:
        with _db() as db:
            locations = accounts.delete_account(
                db, _account(db, request).id, request.form.text("confirm_username", 128)
            )
    except LifeMonitorError as exc:
        return _fail(request, "accountsTab", exc)
    storage.remove_crates(locations)
    logout(request.session)
    flash(request.session, "Your account has been deleted.")
    return redirect("/", session=request.session)


@page(routes, "/account/identities/disconnect", methods=["POST"])
def disconnect_identity(request: PageRequest):
    from chalicelib.services import identities

    try:
        identity_id = int(request.form.text("identity_id", 20))
    except ValueError:
        raise NotFoundError("no such identity on your account") from None
    try:
        with _db() as db:
            identities.disconnect_identity(db, _account(db, request).id, identity_id)
    except LifeMonitorError as exc:
        return _fail(request, "accountsTab", exc)
    return _back(request, "accountsTab", "Identity disconnected.")


# -- notifications ------------------------------------------------------------------------


@page(routes, "/account/set_email", methods=["POST"])
def set_email(request: PageRequest):
    from chalicelib.services import accounts

    try:
        with _db() as db:
            accounts.set_email(db, _account(db, request).id, request.form.text("email", 256))
    except LifeMonitorError as exc:
        return _fail(request, "notificationsTab", exc)
    return _back(request, "notificationsTab", "E-mail address saved: please verify it.")


@page(routes, "/account/update_notifications_switch", methods=["POST"])
def update_notifications_switch(request: PageRequest):
    from chalicelib.services import accounts

    enabled = request.form.get("enable_notifications") in {"on", "true", "1"}
    with _db() as db:
        accounts.set_notifications(db, _account(db, request).id, enabled)
    state = "on" if enabled else "off"
    return _back(request, "notificationsTab", f"E-mail notifications are {state}.")


# -- OAuth apps ---------------------------------------------------------------------------


@page(routes, "/account/oauth2/clients/save", methods=["POST"])
def save_oauth_app(request: PageRequest):
    from chalicelib.services import oauth_apps

    form = request.form
    fields = {
        "name": form.text("client_name", 128),
        "redirect_uris": form.text("redirect_uris", 12000),
        "scopes": form.getlist("scopes"),
        "client_uri": form.text("client_uri", 1024),
    }
    client_id = form.text("client_id", 48)
    try:
        with _db() as db:
            user = _account(db, request)
            if client_id:
                oauth_apps.update_app(db, user.id, client_id, **fields)
            else:
                new = oauth_apps.create_app(db, user, **fields)
                created = (new.client.client_id, new.client_secret, new.client.client_name)
    except LifeMonitorError as exc:
        return _fail(request, "oauth2ClientsTab", exc, draft=form)
    if client_id:
        return _back(request, "oauth2ClientsTab", "OAuth app saved.")
    return _profile(
        request,
        "oauth2ClientsTab",
        new_client={"client_id": created[0], "client_secret": created[1], "name": created[2]},
    )


@page(routes, "/account/oauth2/clients/edit")
def edit_oauth_app(request: PageRequest):
    query = {"currentView": "oauth2ClientsTab", "edit": request.query.get("client_id", "")}
    return redirect("/account/profile?" + urlencode(query), session=request.session)


@page(routes, "/account/oauth2/clients/rotate", methods=["POST"])
def rotate_oauth_app_secret(request: PageRequest):
    from chalicelib.services import oauth_apps

    client_id = request.form.text("client_id", 48)
    try:
        with _db() as db:
            secret = oauth_apps.rotate_secret(db, _account(db, request).id, client_id)
    except LifeMonitorError as exc:
        return _fail(request, "oauth2ClientsTab", exc)
    return _profile(
        request,
        "oauth2ClientsTab",
        new_client={"client_id": client_id, "client_secret": secret, "name": None},
    )


@page(routes, "/account/oauth2/clients/delete", methods=["POST"])
def delete_oauth_app(request: PageRequest):
    from chalicelib.services import oauth_apps

    try:
        with _db() as db:
            oauth_apps.delete_app(db, _account(db, request).id, request.form.text("client_id", 48))
    except LifeMonitorError as exc:
        return _fail(request, "oauth2ClientsTab", exc)
    return _back(request, "oauth2ClientsTab", "OAuth app deleted.")
