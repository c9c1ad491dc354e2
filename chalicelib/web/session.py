"""The browser session: a signed, timestamped cookie holding a small JSON dict.

Signed with itsdangerous (HMAC-SHA256) under a key from the parameter store
(`web/session_key`), created on first use (atomically: concurrent first uses agree on one
key); an administrator may set their own beforehand or rotate it. A forged, malformed or
stale cookie reads as an empty session. The session holds the user id and a CSRF token;
`login`/`logout` rotate that token, so a token seen before a login is worthless after it.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlsplit

from chalicelib.errors import ForbiddenError

COOKIE_NAME = "lm_session"
SIGNING_KEY_NAME = "web/session_key"  # its name in the parameter store
#: A session lives this long after it was last written (sliding: refreshed when older
#: than RENEW_AFTER and still in use).
MAX_AGE = 7 * 24 * 3600
RENEW_AFTER = 24 * 3600
#: Cookies above ~4 KB are dropped by browsers: refuse to write one that large.
MAX_COOKIE_BYTES = 3800
_SALT = "lifemonitor.web.session"
_CSRF = "_csrf"
_USER = "user_id"


class WebSession(dict):
    """The session's values (JSON-serialisable). `modified` says the cookie must be
    written again; every mutation sets it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.modified = False

    @property
    def user_id(self) -> int | None:
        value = self.get(_USER)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.modified = True

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.modified = True

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self.modified = True
        return super().pop(key, *default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self.modified = True

    def clear(self) -> None:
        if self:
            self.modified = True
        super().clear()

    def popitem(self):  # pragma: no cover - dict API completeness
        self.modified = True
        return super().popitem()


# -- signing -------------------------------------------------------------------------

_serializers: dict[str, Any] = {}
_lock = threading.Lock()


def _signing_key() -> str:
    from chalicelib.secrets import get_secrets

    store = get_secrets()
    key = store.get(SIGNING_KEY_NAME)
    if key:
        return key
    import secrets

    # Created on first use, once for all: of two Lambdas racing, both sign with the
    # first one's key (a second key would log out whoever the first signed in).
    return store.put_if_absent(SIGNING_KEY_NAME, secrets.token_urlsafe(48))


def _serializer():
    key = _signing_key()
    serializer = _serializers.get(key)
    if serializer is None:
        from itsdangerous import URLSafeTimedSerializer

        serializer = URLSafeTimedSerializer(key, salt=_SALT)
        with _lock:
            _serializers.clear()  # a rotated key replaces the old serializer
            _serializers[key] = serializer
    return serializer


def _cookie_value(headers) -> str | None:
    """Our cookie from the Cookie header(s), without SimpleCookie (which gives up on the
    whole header at the first cookie it dislikes)."""
    raw = None
    if headers is not None:
        raw = headers.get("cookie") if hasattr(headers, "get") else None
        if raw is None and isinstance(headers, dict):
            raw = next((v for k, v in headers.items() if k.lower() == "cookie"), None)
    if not raw:
        return None
    for part in raw.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == COOKIE_NAME:
            return value.strip().strip('"')
    return None


def load_session(headers) -> WebSession:
    """The session the request's cookie carries; empty if it has none, or a forged,
    malformed or expired one."""
    value = _cookie_value(headers)
    if not value or len(value) > 8192:
        return WebSession()
    from itsdangerous import BadSignature

    try:
        data, signed_at = _serializer().loads(value, max_age=MAX_AGE, return_timestamp=True)
    except (BadSignature, ValueError, TypeError):
        return WebSession()
    if not isinstance(data, dict):
        return WebSession()
    session = WebSession(data)
    if time.time() - signed_at.timestamp() > RENEW_AFTER:
        session.modified = True  # still in use: sign it again so it does not lapse
    return session


def _secure() -> bool:
    from chalicelib.config import get_settings

    settings = get_settings()
    return settings.is_deployed or settings.external_server_url.startswith("https://")


def cookie_path() -> str:
    """Our base path (EXTERNAL_SERVER_URL may carry an API Gateway stage), else `/`."""
    from chalicelib.config import get_settings

    return urlsplit(get_settings().external_server_url).path.rstrip("/") or "/"


def session_cookie(session: WebSession) -> str:
    """The Set-Cookie value that stores `session` (or deletes the cookie when empty)."""
    attributes = [f"Path={cookie_path()}", "HttpOnly", "SameSite=Lax"]
    if _secure():
        attributes.append("Secure")
    if not session:
        return "; ".join([f"{COOKIE_NAME}=", "Max-Age=0", *attributes])
    value = _serializer().dumps(dict(session))
    if len(value) > MAX_COOKIE_BYTES:
        raise ValueError(f"the session is too large for a cookie ({len(value)} bytes)")
    return "; ".join([f"{COOKIE_NAME}={value}", f"Max-Age={MAX_AGE}", *attributes])


# -- login state and CSRF ------------------------------------------------------------


def csrf_token(session: WebSession) -> str:
    """The session's CSRF token, created on first use (for every form of the page)."""
    token = session.get(_CSRF)
    if not isinstance(token, str) or not token:
        token = _new_token()
        session[_CSRF] = token
    return token


def check_csrf(session: WebSession, submitted: str | None) -> None:
    """Refuse a form whose token is not this session's (a cross-site post carries no
    session cookie under SameSite=Lax, hence no token to match)."""
    import hmac  # lazily: hashlib's OpenSSL binding costs cold-start time

    expected = session.get(_CSRF)
    if (
        not isinstance(expected, str)
        or not expected
        or not isinstance(submitted, str)
        or not hmac.compare_digest(expected.encode(), submitted.encode())
    ):
        raise ForbiddenError(
            "The form's security token is missing or out of date: reload the page and try again"
        )


def login(session: WebSession, user_id: int, username: str | None = None) -> None:
    """Sign `user_id` in; whatever the session held before (a pending login flow's state
    included) is dropped, and the CSRF token changes."""
    session.clear()
    session[_USER] = int(user_id)
    if username:
        session["username"] = username
    session[_CSRF] = _new_token()


def logout(session: WebSession) -> None:
    session.clear()
    session[_CSRF] = _new_token()


def _new_token() -> str:
    import secrets

    return secrets.token_urlsafe(32)


def safe_next(url: str | None, default: str = "/account/profile") -> str:
    """`url` if it is a path on our own origin, else `default`. Refuses absolute and
    scheme-relative URLs (`https://evil`, `//evil`, `/\\evil`), schemes (`javascript:`)
    and control characters."""
    if not url or not isinstance(url, str) or len(url) > 2048:
        return default
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url) or "\\" in url:
        return default
    if not url.startswith("/") or url.startswith("//"):
        return default
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        return default
    return url
