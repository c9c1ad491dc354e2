"""Jinja2 over `chalicelib/web/templates/`, autoescaped, built on first use (Jinja2 is not
imported by `import app`)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")

_env = None
_lock = threading.Lock()


def base_path() -> str:
    """The path EXTERNAL_SERVER_URL puts before ours (an API Gateway stage), or ""."""
    from urllib.parse import urlsplit

    from chalicelib.config import get_settings

    return urlsplit(get_settings().external_server_url).path.rstrip("/")


def url(path: str, **query: Any) -> str:
    """A link to one of our pages: `url('/account/profile', currentView='apiKeysTab')`."""
    from urllib.parse import urlencode

    link = base_path() + path
    params = {k: v for k, v in query.items() if v is not None}
    return f"{link}?{urlencode(params)}" if params else link


def environment():
    global _env
    if _env is None:
        with _lock:
            if _env is None:
                import jinja2

                env = jinja2.Environment(
                    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                    autoescape=True,  # every template, whatever its extension
                    undefined=jinja2.StrictUndefined,
                    trim_blocks=True,
                    lstrip_blocks=True,
                )
                env.globals["url"] = url
                _env = env
    return _env


def render(template: str, **context: Any) -> str:
    """Render `template` with `context`. Pass `session=<WebSession>` to get the nav's
    signed-in user and `csrf_token` for the page's forms."""
    session = context.get("session")
    if session is not None:
        from chalicelib.web.session import csrf_token

        context.setdefault("csrf_token", csrf_token(session))
        context.setdefault("current_user", _current_user(session))
        pending = session.pop("_flash", None)  # a notice left by the previous request
        if isinstance(pending, list) and len(pending) == 2 and "flash" not in context:
            context["flash"], context["flash_kind"] = pending
    else:
        context.setdefault("csrf_token", "")
        context.setdefault("current_user", None)
    context.setdefault("title", None)
    context.setdefault("flash", None)  # a one-line notice above the content
    context.setdefault("flash_kind", "info")
    return environment().get_template(template).render(**context)


def flash(session, message: str, kind: str = "info") -> None:
    """Leave a one-line notice for the next page shown (after a redirect)."""
    session["_flash"] = [message, kind]


def _current_user(session) -> dict | None:
    """{"id", "username"} of the signed-in user for the nav; the name is read once and
    kept in the session."""
    user_id = session.user_id
    if user_id is None:
        return None
    name = session.get("username")
    if not isinstance(name, str) or not name:
        from chalicelib.db import session_scope
        from chalicelib.models import User

        with session_scope() as db:
            user = db.get(User, user_id)
            name = user.username if user is not None else None
        if name is None:
            return None  # the account is gone; pages that need one log the session out
        session["username"] = name
    return {"id": user_id, "username": name}
