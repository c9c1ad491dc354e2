"""LS AAI (LifeScience Login), the OpenID Connect login provider, against the emulated one
(`emulators/oidc.py`): configuration, discovery (cached; down or another issuer's:
unavailable), the authorization URL (state, PKCE, nonce), the ID token's verification (each
defect refused as a ProviderError, logging no token), the identity from userinfo, key
rotation, and the identity's tokens refreshed through the discovered token endpoint."""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from emulators.oidc import DEFECTS, DISCOVERY_PATH, JWKS_PATH, OIDCEmulator

CALLBACK = "http://lm.test/oauth2/authorized/lsaai"
JANE = "5a1d3c0b9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b@lifescience-ri.eu"
SAM = "0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e@lifescience-ri.eu"


@pytest.fixture(scope="module")
def _emulator():
    # One per module: its RSA keys take a moment to make; reset before each test.
    with OIDCEmulator() as emulator:
        yield emulator


@pytest.fixture
def lsaai(db, _emulator, monkeypatch):
    from chalicelib.auth import providers
    from chalicelib.secrets import get_secrets

    _emulator.reset()
    app = _emulator.register_oauth_app([CALLBACK])
    monkeypatch.setenv("LM_LSAAI_CLIENT_ID", app.client_id)
    monkeypatch.setenv("LM_LSAAI_ISSUER", _emulator.issuer)
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    get_secrets().put("oauth2/providers/lsaai/client_secret", app.client_secret)
    _emulator.app = app
    providers.reset_probes()
    yield _emulator
    providers.reset_probes()


def provider():
    from chalicelib.auth import providers
    from chalicelib.db import session_scope

    with session_scope() as s:
        return providers.check_available(providers.get_provider(s, "lsaai"))


def callback_query(url: str, emulator, person: str = JANE) -> dict[str, str]:
    """The person, already signed in at LS AAI, is sent back with a code."""
    emulator.auto_login = person
    r = requests.get(url, allow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text
    location = r.headers["Location"]
    assert location.startswith(CALLBACK + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def sign_in(emulator, person: str = JANE):
    from chalicelib.auth import providers

    p = provider()
    url, state = providers.begin_login(p)
    return providers.complete_login(p, state, callback_query(url, emulator, person))


def test_listed_only_when_configured(db, lsaai, monkeypatch):
    from chalicelib.auth import providers
    from chalicelib.db import session_scope

    with session_scope() as s:
        [listed] = providers.list_providers(s)
    assert (listed.name, listed.label, listed.kind, listed.available) == (
        "lsaai",
        "LifeScience Login",
        "oidc",
        True,
    )
    assert listed.login_url == "/oauth2/login/lsaai" and listed.callback_url == CALLBACK
    assert listed.scope == "openid profile email"
    # Configured, but its secret is not in the parameter store: listed, unavailable.
    from chalicelib.secrets import get_secrets

    get_secrets().delete("oauth2/providers/lsaai/client_secret")
    with session_scope() as s:
        assert [p.available for p in providers.list_providers(s)] == [False]
    monkeypatch.delenv("LM_LSAAI_CLIENT_ID")
    with session_scope() as s:
        assert providers.list_providers(s) == []


def test_authorization_url_carries_state_pkce_and_nonce(db, lsaai):
    from chalicelib.auth import providers

    url, state = providers.begin_login(provider(), "/dashboard")
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{lsaai.url}/oidc/authorize"
    assert query["scope"] == "openid profile email"
    assert query["client_id"] == lsaai.app.client_id
    assert query["redirect_uri"] == CALLBACK
    assert query["state"] == state.state and query["code_challenge_method"] == "S256"
    assert query["nonce"] == state.nonce and len(state.nonce) >= 32
    assert state.nonce != state.state and state.code_verifier not in url
    again = providers.LoginState.from_dict(json.loads(json.dumps(state.as_dict())))
    assert again == state
    # The discovery document was fetched once: the probe's copy served begin_login.
    assert len(lsaai.requests_to(DISCOVERY_PATH)) == 1


def test_identity_from_a_verified_id_token_and_userinfo(db, lsaai):
    found = sign_in(lsaai)
    assert (found.provider, found.provider_user_id) == ("lsaai", JANE)
    assert (found.username, found.name, found.email) == ("jdoe", "Jane Doe", "jane.doe@uni.example")
    assert found.registry_id is None
    assert found.user_info["provider_uri"] == lsaai.issuer
    assert found.user_info["userinfo_endpoint"] == f"{lsaai.url}/oidc/userinfo"
    assert found.user_info["email_verified"] is True
    assert found.token["access_token"] in lsaai.tokens and found.token["id_token"]
    [exchange] = lsaai.requests_to(r"^/oidc/token$")
    assert "code_verifier" in parse_qs(exchange.body.decode())
    [userinfo] = lsaai.requests_to(r"^/oidc/userinfo$")
    assert userinfo.headers["authorization"] == f"Bearer {found.token['access_token']}"


def test_username_from_the_email_and_name_from_its_parts(db, lsaai):
    found = sign_in(lsaai, SAM)
    assert (found.username, found.name, found.email) == (
        "sam.smith",
        "Sam Smith",
        "sam.smith@lab.example",
    )


def test_unverified_email_is_not_taken(db, lsaai):
    lsaai.users[JANE].email_verified = False
    found = sign_in(lsaai)
    assert found.email is None and found.user_info["email"] is None
    assert found.user_info["email_verified"] is False
    assert found.username == "jdoe"


def test_hs256_id_token_checked_with_the_client_secret(db, lsaai):
    lsaai.signing_alg = "HS256"
    assert sign_in(lsaai).provider_user_id == JANE


@pytest.mark.parametrize("defect", DEFECTS)
def test_id_token_defects_are_refused(db, lsaai, defect, caplog):
    from chalicelib.auth import providers

    caplog.set_level(logging.DEBUG)
    lsaai.id_token_defect = defect
    p = provider()
    url, state = providers.begin_login(p)
    query = callback_query(url, lsaai)
    with pytest.raises(providers.ProviderError, match="cannot be verified") as info:
        providers.complete_login(p, state, query)
    assert info.value.status == 502 and info.value.provider == "lsaai"
    # The refusal is logged, with no token, code or secret.
    assert any("ID token refused" in r.getMessage() for r in caplog.records)
    [access] = lsaai.tokens
    [refresh] = lsaai._oauth().refresh
    log_text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for secret in (access, refresh, lsaai.app.client_secret, query["code"]):
        assert secret not in log_text


def test_an_id_token_signed_with_a_new_key_fetches_the_keys_again(db, lsaai):
    sign_in(lsaai)
    assert len(lsaai.requests_to(JWKS_PATH)) == 1
    sign_in(lsaai)
    assert len(lsaai.requests_to(JWKS_PATH)) == 1  # reused
    lsaai.rotate_key()
    assert sign_in(lsaai).provider_user_id == JANE
    assert len(lsaai.requests_to(JWKS_PATH)) == 2


def test_discovery_down_makes_the_provider_unavailable(db, lsaai):
    from chalicelib.auth import providers
    from chalicelib.db import session_scope

    lsaai.discovery_down = True
    with session_scope() as s:
        assert [p.available for p in providers.list_providers(s)] == [False]
    p = provider()
    assert not p.available
    with pytest.raises(providers.ProviderError, match="not available right now") as info:
        providers.begin_login(p)
    assert info.value.status == 503
    # The verdict is remembered (no request per page view), and forgotten after a reset.
    with session_scope() as s:
        providers.list_providers(s)
    assert len(lsaai.requests_to(DISCOVERY_PATH)) == 1
    lsaai.discovery_down = False
    providers.reset_probes()
    assert provider().available


@pytest.mark.parametrize(
    "document",
    [
        {"issuer": "https://impostor.example/oidc/"},  # another provider's document
        {"jwks_uri": None},
        {"userinfo_endpoint": "javascript:alert(1)"},
        {"id_token_signing_alg_values_supported": ["none"]},
    ],
)
def test_a_discovery_document_we_cannot_use_is_unavailable(db, lsaai, document):
    good = requests.get(lsaai.url + DISCOVERY_PATH, timeout=10).json()
    lsaai.fault(DISCOVERY_PATH, status=200, body={**good, **document})
    assert not provider().available


def test_discovery_failing_at_the_callback(db, lsaai):
    """The discovery expired between the two requests and the provider is now down."""
    from chalicelib.auth import providers

    p = provider()
    url, state = providers.begin_login(p)
    query = callback_query(url, lsaai)
    providers.reset_probes()
    lsaai.discovery_down = True
    with pytest.raises(providers.ProviderError, match="not available") as info:
        providers.complete_login(p, state, query)
    assert info.value.status == 503


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"state": "forged"}, "invalid or has expired"),
        ({"nonce": None}, "invalid or has expired"),  # a login state of before OIDC
        ({"provider": "github"}, "invalid or has expired"),
    ],
)
def test_state_mismatch_is_refused(db, lsaai, change, message):
    from dataclasses import replace

    from chalicelib.auth import providers

    p = provider()
    url, state = providers.begin_login(p)
    query = callback_query(url, lsaai)
    if "state" in change:
        query["state"] = change["state"]
    else:
        state = replace(state, **change)
    with pytest.raises(providers.ProviderError, match=message) as info:
        providers.complete_login(p, state, query)
    assert info.value.status == 400
    assert not lsaai.requests_to(r"^/oidc/token$")  # no code was exchanged


def test_tokens_are_refreshed_at_the_discovered_endpoint(db, lsaai):
    from chalicelib.auth import providers
    from chalicelib.db import session_scope
    from chalicelib.models import Identity
    from chalicelib.services import identities, users

    found = sign_in(lsaai)
    with session_scope() as s:
        user = users.create_user(s, "jane")
        identities.sign_in(s, found, user.id)
    with session_scope() as s:
        identity = s.query(Identity).one()
        assert found.token["id_token"] not in json.dumps(identity.tokens)  # sealed
        tokens = providers.open_tokens(identity.tokens)
        tokens["default"]["expires_at"] = 0
        identity.tokens = providers.seal_tokens(tokens)
        lsaai.expire_access_tokens()
        fresh = providers.fresh_token(s, identity)
    assert fresh and fresh != found.token["access_token"]
    r = requests.get(
        f"{lsaai.url}/oidc/userinfo", headers={"Authorization": f"Bearer {fresh}"}, timeout=10
    )
    assert r.status_code == 200 and r.json()["sub"] == JANE
