"""E-mail verification pages: the profile's Notifications tab posts to
`/account/send_verification_email`; the mailed link opens `/account/validate_email?code=…`.
The rules live in services/email.py."""

from __future__ import annotations

from chalice import Blueprint

from chalicelib.errors import LifeMonitorError
from chalicelib.web.render import flash, render
from chalicelib.web.responses import html, redirect
from chalicelib.web.routing import PageRequest, page

routes = Blueprint(__name__)

TAB = "/account/profile?currentView=notificationsTab"


@page(routes, "/account/send_verification_email", methods=["POST"])
def send_verification_email(request: PageRequest):
    from chalicelib.db import session_scope
    from chalicelib.services import email

    user_id = request.require_user()
    try:
        with session_scope() as db:
            address = email.send_verification(db, user_id)
    except LifeMonitorError as exc:
        flash(request.session, exc.detail or exc.title, "error")
        return redirect(TAB, session=request.session)
    flash(request.session, f"A verification link was sent to {address}.")
    return redirect(TAB, session=request.session)


@page(routes, "/account/validate_email")
def validate_email(request: PageRequest):
    """Open from the mail, signed in or not (another browser, a phone): the code alone
    verifies the address it was sent to."""
    from chalicelib.db import session_scope
    from chalicelib.services import email

    code = (request.query.get("code") or "").strip()
    try:
        with session_scope() as db:
            user = email.validate(db, code)
            address = user.email
    except LifeMonitorError as exc:
        body = render(
            "error.html",
            session=request.session,
            error_title="E-mail not verified",
            detail=exc.detail or exc.title,
            status=exc.status,
        )
        return html(body, status=exc.status, session=request.session)
    message = f"Your e-mail address {address} is verified: notifications will be mailed to it."
    if request.session.user_id is not None:
        flash(request.session, message)
        return redirect(TAB, session=request.session)
    body = render(
        "error.html",
        session=request.session,
        error_title="E-mail verified",
        detail=message,
        status=200,
    )
    return html(body, status=200, session=request.session)
