"""An OAuth2 provider (authorization code, PKCE, refresh) to mix into an emulator: what
WorkflowHub (Doorkeeper) and GitHub do when LifeMonitor logs a person in through them, and
the base of the OpenID Connect provider (`oidc.py`: the `nonce` kept with the code, an ID
token added by `token_extras`).

The person signs in on a small HTML form (login and password) or, when `auto_login` names
a person, is let through at once. Codes are single-use and expire; PKCE (S256 and plain) is
checked when the authorization request carried a challenge; refresh tokens rotate.
`ttl` and `token_expires_in` are settable so tests can reach expiry quickly.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from emulators.base import Reply, Request


@dataclass
class OAuthApp:
    client_id: str
    client_secret: str
    redirect_uris: list[str]


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    person: str
    scope: str
    challenge: str | None
    method: str | None
    expires: float
    nonce: str | None = None  # OpenID Connect: goes back in the ID token


@dataclass
class OAuthState:
    apps: dict[str, OAuthApp] = field(default_factory=dict)
    codes: dict[str, _Code] = field(default_factory=dict)
    # refresh token -> (person, client id, scope)
    refresh: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    # access token -> expiry (epoch seconds); the person is in the emulator's `tokens`
    expiry: dict[str, float] = field(default_factory=dict)
    scopes: dict[str, str] = field(default_factory=dict)  # access token -> granted scope


def _form(req: Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}


def _with_params(uri: str, **params: str) -> str:
    parts = urlsplit(uri)
    query = parts.query + ("&" if parts.query else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class OAuthProviderMixin:
    """Mix into an `Emulator` that has `tokens: dict[str, person]`; call
    `setup_oauth_routes(authorize_path, token_path)` from `setup_routes` and implement
    `oauth_authenticate(login, password) -> person | None` and `oauth_people()`."""

    oauth_title = "Sign in"
    code_ttl = 600.0
    token_expires_in = 7200
    #: a person let through without the form (None: the form is shown)
    auto_login: str | None = None

    def _oauth(self) -> OAuthState:
        state = getattr(self, "_oauth_state", None)
        if state is None:
            state = self._oauth_state = OAuthState()
            self._oauth_lock = threading.Lock()
        return state

    def reset_oauth(self) -> None:
        self._oauth_state = OAuthState()
        self._oauth_lock = threading.Lock()
        self.auto_login = None

    # -- for tests -------------------------------------------------------------------------
    def register_oauth_app(
        self,
        redirect_uris: list[str],
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> OAuthApp:
        app = OAuthApp(
            client_id=client_id or secrets.token_hex(8),
            client_secret=client_secret or secrets.token_hex(16),
            redirect_uris=list(redirect_uris),
        )
        self._oauth().apps[app.client_id] = app
        return app

    def expire_access_tokens(self) -> None:
        """Every access token issued so far answers 401 from now on (refresh still works)."""
        state = self._oauth()
        for token in list(state.expiry):
            state.expiry[token] = 0.0

    def access_scope(self, token: str) -> str:
        return self._oauth().scopes.get(token, "")

    def access_token_valid(self, token: str) -> bool:
        expiry = self._oauth().expiry.get(token)
        return expiry is None or expiry > time.time()

    # -- routes ------------------------------------------------------------------------------
    def setup_oauth_routes(self, authorize_path: str, token_path: str) -> None:
        self._authorize_path = authorize_path
        self.route("GET", authorize_path, self._oauth_authorize_form)
        self.route("POST", authorize_path, self._oauth_authorize_submit)
        self.route("POST", token_path, self._oauth_token)

    def oauth_authenticate(self, login: str, password: str) -> str | None:
        raise NotImplementedError

    def _check_authorize(self, params: dict[str, str]) -> tuple[OAuthApp | None, Reply | None]:
        app = self._oauth().apps.get(params.get("client_id", ""))
        if app is None:
            return None, Reply(401, _page("Error", "<p>Unknown client</p>"), content_type=HTML)
        if params.get("redirect_uri") not in app.redirect_uris:
            return None, Reply(
                400, _page("Error", "<p>The redirect URI is not registered</p>"), content_type=HTML
            )
        if params.get("response_type") != "code":
            return None, Reply(
                302,
                headers={
                    "Location": _with_params(
                        params["redirect_uri"],
                        error="unsupported_response_type",
                        state=params.get("state", ""),
                    )
                },
            )
        return app, None

    def _oauth_authorize_form(self, req: Request) -> Reply:
        params = {k: v[0] for k, v in req.query.items()}
        _app, error = self._check_authorize(params)
        if error:
            return error
        if self.auto_login is not None:
            return self._issue_code(params, str(self.auto_login))
        return self._login_page(params)

    def _login_page(self, params: dict[str, str], message: str = "", status: int = 200) -> Reply:
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
            if k not in {"login", "password"}
        )
        body = (
            (f'<p role="alert">{html.escape(message)}</p>' if message else "")
            + f'<form method="post" action="{self._authorize_path}">{hidden}'
            '<label>Login <input name="login" autocomplete="username"></label>'
            '<label>Password <input name="password" type="password"></label>'
            '<button type="submit" name="authorize" value="1">Sign in and authorize</button>'
            '<button type="submit" name="deny" value="1">Deny</button></form>'
        )
        return Reply(status, _page(self.oauth_title, body), content_type=HTML)

    def _oauth_authorize_submit(self, req: Request) -> Reply:
        params = _form(req)
        _app, error = self._check_authorize(params)
        if error:
            return error
        if params.get("deny"):
            return Reply(
                302,
                headers={
                    "Location": _with_params(
                        params["redirect_uri"], error="access_denied", state=params.get("state", "")
                    )
                },
            )
        person = self.oauth_authenticate(params.get("login", ""), params.get("password", ""))
        if person is None:
            return self._login_page(params, "Invalid login or password", status=401)
        return self._issue_code(params, person)

    def _issue_code(self, params: dict[str, str], person: str) -> Reply:
        code = secrets.token_urlsafe(24)
        self._oauth().codes[code] = _Code(
            client_id=params["client_id"],
            redirect_uri=params["redirect_uri"],
            person=str(person),
            scope=params.get("scope", ""),
            challenge=params.get("code_challenge"),
            method=params.get("code_challenge_method") or "plain",
            expires=time.time() + self.code_ttl,
            nonce=params.get("nonce"),
        )
        out = {"code": code}
        if params.get("state"):
            out["state"] = params["state"]
        return Reply(302, headers={"Location": _with_params(params["redirect_uri"], **out)})

    def _client_auth(self, req: Request, form: dict[str, str]) -> OAuthApp | None:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = req.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                client_id, _, secret = base64.b64decode(header[6:].strip()).decode().partition(":")
            except ValueError:
                return None
        app = self._oauth().apps.get(client_id or "")
        if app is None or not secrets.compare_digest(app.client_secret, secret or ""):
            return None
        return app

    def _oauth_token(self, req: Request) -> Reply:
        form = _form(req)
        app = self._client_auth(req, form)
        if app is None:
            return _error(401, "invalid_client", "Client authentication failed")
        state = self._oauth()
        grant = form.get("grant_type")
        with self._oauth_lock:
            if grant == "authorization_code":
                code = state.codes.pop(form.get("code", ""), None)
                if code is None or code.client_id != app.client_id or code.expires < time.time():
                    return _error(400, "invalid_grant", "The authorization code is invalid")
                if form.get("redirect_uri") != code.redirect_uri:
                    return _error(400, "invalid_grant", "The redirect URI does not match")
                if code.challenge and not _pkce_ok(
                    form.get("code_verifier", ""), code.challenge, code.method
                ):
                    return _error(400, "invalid_grant", "The code verifier does not match")
                person, scope, nonce = code.person, code.scope, code.nonce
            elif grant == "refresh_token":
                entry = state.refresh.pop(form.get("refresh_token", ""), None)
                if entry is None or entry[1] != app.client_id:
                    return _error(400, "invalid_grant", "The refresh token is invalid")
                person, _client, scope = entry
                nonce = None
            else:
                return _error(400, "unsupported_grant_type", "Unsupported grant type")
            access = secrets.token_urlsafe(24)
            refresh = secrets.token_urlsafe(24)
            self.tokens[access] = person
            state.expiry[access] = time.time() + self.token_expires_in
            state.scopes[access] = scope
            state.refresh[refresh] = (person, app.client_id, scope)
        body = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.token_expires_in,
            "refresh_token": refresh,
            "scope": scope,
            "created_at": int(time.time()),
        }
        body.update(self.token_extras(app, person, scope, nonce, access))
        return self.token_reply(body, req)

    def token_extras(
        self, app: OAuthApp, person: str, scope: str, nonce: str | None, access_token: str
    ) -> dict:
        """More fields of a token response (an OpenID Connect provider's `id_token`)."""
        return {}

    def token_reply(self, body: dict, req: Request) -> Reply:
        return Reply(200, body, headers={"Cache-Control": "no-store"})


HTML = "text/html; charset=utf-8"


def _page(title: str, body: str) -> str:
    return (
        f"<!DOCTYPE html><html><head><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _error(status: int, error: str, description: str) -> Reply:
    return Reply(status, {"error": error, "error_description": description})


def _pkce_ok(verifier: str, challenge: str, method: str | None) -> bool:
    if method == "S256":
        digest = hashlib.sha256(verifier.encode()).digest()
        expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        return secrets.compare_digest(expected, challenge)
    return secrets.compare_digest(verifier, challenge)
