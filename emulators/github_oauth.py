"""GitHub as an OAuth login provider: `/login/oauth/authorize`, `/login/oauth/access_token`
(what github.com serves) and `/user`, `/user/emails` (what api.github.com serves), on one
loopback server — point both base URLs of our GitHub login at `.url`.

Behaviour reproduced from GitHub's documentation ("Authorizing OAuth apps"):

* the token endpoint answers form-encoded unless the client accepts JSON;
* `/user` carries `email: null` when the person keeps their address private, and
  `/user/emails` then gives it (`primary`, `verified`); both need the `user:email` scope
  for the address list, else 404;
* an unknown or expired token answers 401 `{"message": "Bad credentials"}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

from emulators.base import Emulator, Reply, Request
from emulators.oauth_provider import OAuthProviderMixin

DEFAULT_PASSWORD = "github-emulator"  # noqa: S105 - the emulated people's password


@dataclass
class GitHubUser:
    id: int
    login: str
    name: str | None
    public_email: str | None  # what /user shows (None: kept private)
    emails: list[dict] = field(default_factory=list)  # what /user/emails lists
    password: str = DEFAULT_PASSWORD


def _default_users() -> dict[str, GitHubUser]:
    return {
        "583231": GitHubUser(
            id=583231,
            login="octocat",
            name="The Octocat",
            public_email=None,
            emails=[
                {"email": "octocat@users.noreply.github.com", "primary": False, "verified": True},
                {"email": "octocat@github.example", "primary": True, "verified": True},
            ],
        ),
        "1024025": GitHubUser(
            id=1024025,
            login="hubber",
            name=None,
            public_email="hubber@github.example",
            emails=[{"email": "hubber@github.example", "primary": True, "verified": True}],
        ),
    }


class GitHubOAuthEmulator(OAuthProviderMixin, Emulator):
    def __init__(self, latency: float = 0.0) -> None:
        self.tokens: dict[str, str] = {}
        self.users: dict[str, GitHubUser] = _default_users()
        self.oauth_title = "Sign in to GitHub"
        self.reset_oauth()
        super().__init__(latency)

    def reset(self) -> None:
        self.tokens.clear()
        self.users = _default_users()
        self.reset_oauth()
        self.clear_faults()
        with self._lock:
            self.requests.clear()

    def setup_routes(self) -> None:
        self.setup_oauth_routes("/login/oauth/authorize", "/login/oauth/access_token")
        self.route("GET", r"/user", self._user)
        self.route("GET", r"/user/emails", self._emails)

    def oauth_authenticate(self, login: str, password: str) -> str | None:
        for uid, user in self.users.items():
            if login and user.login == login:
                return uid if password == user.password else None
        return None

    def token_reply(self, body: dict, req: Request) -> Reply:
        if "json" in req.headers.get("accept", ""):
            return Reply(200, body)
        return Reply(
            200,
            urlencode({k: str(v) for k, v in body.items()}),
            content_type="application/x-www-form-urlencoded",
        )

    def _caller(self, req: Request) -> GitHubUser | None:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() not in {"bearer", "token"} or token not in self.tokens:
            return None
        if not self.access_token_valid(token):
            return None
        return self.users.get(str(self.tokens[token]))

    def _user(self, req: Request) -> Reply:
        user = self._caller(req)
        if user is None:
            return Reply(401, {"message": "Bad credentials"})
        return Reply(
            200,
            {
                "login": user.login,
                "id": user.id,
                "node_id": f"MDQ6VXNlcj{user.id}",
                "avatar_url": f"{self.url}/avatars/{user.id}",
                "html_url": f"{self.url}/{user.login}",
                "type": "User",
                "site_admin": False,
                "name": user.name,
                "email": user.public_email,
            },
        )

    def _emails(self, req: Request) -> Reply:
        user = self._caller(req)
        if user is None:
            return Reply(401, {"message": "Bad credentials"})
        token = req.headers.get("authorization", "").partition(" ")[2].strip()
        if not {"user", "user:email"} & set(self.access_scope(token).replace(",", " ").split()):
            return Reply(404, {"message": "Not Found"})
        return Reply(200, [dict(e, visibility=None) for e in user.emails])
