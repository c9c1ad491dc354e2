"""Races on the real database over real HTTP: one code exchanged by many requests at once,
one refresh token used by many at once, one identity linked by many sign-ins at once —
each ends in one row and 2xx / 4xx answers, never a 500 or two winners."""

from __future__ import annotations

import threading
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.support.live import LiveServer

REDIRECT = "https://app.example/callback"
BURST = 6


@pytest.fixture
def live(chalice_app, db, monkeypatch):
    with LiveServer(chalice_app) as server:
        monkeypatch.setenv("EXTERNAL_SERVER_URL", server.url)
        yield server


@pytest.fixture
def app_client(user):
    from chalicelib.auth import oauth2
    from chalicelib.auth import scopes as S
    from chalicelib.db import session_scope
    from chalicelib.models import User

    with session_scope() as s:
        new = oauth2.create_client(
            s,
            client_name="app",
            scope=S.AUTHORIZATION_CODE_FLOW,
            grant_types=oauth2.APP_GRANT_TYPES,
            response_types=("code",),
            redirect_uris=[REDIRECT],
            auth_method="client_secret_post",
            owner=s.get(User, user.id),
        )
        return new.client.client_id, new.client_secret


def burst(fn) -> list:
    barrier = threading.Barrier(BURST)
    results: list = []

    def run():
        barrier.wait()
        try:
            results.append(fn())
        except Exception as exc:  # pragma: no cover - reported by the assertion
            results.append(repr(exc))

    threads = [threading.Thread(target=run) for _ in range(BURST)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def issue_code(live, user, client_id) -> str:
    """A code as the authorization endpoint issues it (the person already consented)."""
    from chalicelib.auth import oauth2
    from chalicelib.db import session_scope
    from chalicelib.models import User

    params = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", "user.profile"),
    ]
    with session_scope() as s:
        result = oauth2.authorize(s, params, s.get(User, user.id), decision=True)
    return parse_qs(urlsplit(result.redirect).query)["code"][0]


def test_one_code_many_exchanges(live, user, app_client):
    from chalicelib.db import session_scope
    from chalicelib.models import OAuth2Token

    client_id, secret = app_client
    code = issue_code(live, user, client_id)

    def exchange():
        r = requests.post(
            f"{live.url}/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "client_id": client_id,
                "client_secret": secret,
            },
            timeout=60,
        )
        return r.status_code

    statuses = burst(exchange)
    assert sorted(statuses) == [200] + [400] * (BURST - 1), statuses
    with session_scope() as s:
        tokens = s.query(OAuth2Token).all()
    # The replays revoked what the one winner got (RFC 6749 §4.1.2).
    assert len(tokens) == 1 and tokens[0].revoked


def test_one_refresh_token_many_uses(live, user, app_client):
    from chalicelib.db import session_scope
    from chalicelib.models import OAuth2Token

    client_id, secret = app_client
    code = issue_code(live, user, client_id)
    first = requests.post(
        f"{live.url}/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": client_id,
            "client_secret": secret,
        },
        timeout=60,
    ).json()

    def refresh():
        r = requests.post(
            f"{live.url}/oauth2/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": first["refresh_token"],
                "client_id": client_id,
                "client_secret": secret,
            },
            timeout=60,
        )
        return r.status_code

    statuses = burst(refresh)
    assert sorted(statuses) == [200] + [400] * (BURST - 1), statuses
    with session_scope() as s:
        live_tokens = s.query(OAuth2Token).filter_by(revoked=False).all()
    assert len(live_tokens) == 1


def test_one_identity_linked_by_many_sign_ins(db, user):
    """A signed-in person's provider callback replayed at once (double submit, retries):
    one identity, the others a 409 conflict or the plain outcome of an existing link."""
    from chalicelib.auth.providers import ProviderIdentity
    from chalicelib.db import session_scope
    from chalicelib.errors import ConflictError
    from chalicelib.models import Identity
    from chalicelib.services import identities

    found = ProviderIdentity(
        provider="github",
        provider_user_id="583231",
        username="octocat",
        name=None,
        email=None,
        user_info={},
        token={"access_token": "t" * 20},
    )

    def sign_in():
        try:
            with session_scope() as s:
                return identities.sign_in(s, found, user.id).kind
        except ConflictError:
            return 409

    outcomes = burst(sign_in)
    assert "linked" in outcomes and set(outcomes) <= {"linked", "login", 409}, outcomes
    with session_scope() as s:
        assert s.query(Identity).count() == 1
