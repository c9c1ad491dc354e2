"""Registries: registration, lookup, changes and deletion, with their secrets."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from chalicelib.auth import oauth2
from chalicelib.auth import scopes as S
from chalicelib.auth.hashing import token_hash
from chalicelib.config import get_settings
from chalicelib.errors import BadRequestError, ConflictError, NotFoundError
from chalicelib.models import OAuth2Client, OAuth2Token, Registry
from chalicelib.secrets import get_secrets
from chalicelib.services import registries

WFH = {
    "name": "WorkflowHub",
    "type": "seek",
    "client_id": "wfh-app",
    "client_secret": "wfh-secret",
    "api_url": "https://workflowhub.example/",
    "redirect_uris": "https://workflowhub.example, https://workflowhub.example/cb",
}


@pytest.fixture
def wfh(session):
    creds = registries.add_registry(session, **WFH)
    session.commit()
    return creds


def _secrets_file() -> dict:
    path = get_settings().secrets_file
    return json.loads(path.read_text()) if path.exists() else {}


def _rows(session) -> dict[str, int]:
    return {
        m.__tablename__: session.execute(select(func.count()).select_from(m)).scalar_one()
        for m in (Registry, OAuth2Client, OAuth2Token)
    }


EMPTY = {"registries": 0, "oauth2_clients": 0, "oauth2_tokens": 0}


def _token(session, client_id: str, secret: str):
    return oauth2.token_endpoint(
        session,
        uri="https://lm.test/oauth2/token",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode(
            {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        ),
    )


# --- add --------------------------------------------------------------------------------


def test_add_registry(session, wfh):
    r = wfh.registry
    assert r.name == "WorkflowHub"
    assert r.client_name == "workflow_hub"  # snake_case(name)
    assert r.uri == "https://workflowhub.example"  # trailing slash dropped
    assert r.server_client_id == "wfh-app"
    assert r.type == "seek"
    client = r.oauth_client
    assert wfh.client_id == client.client_id
    assert client.client_secret_hash == token_hash(wfh.client_secret)
    assert set(wfh.scopes) == S.REGISTRY_CLIENT
    assert wfh.grant_types == ["client_credentials", "authorization_code", "refresh_token"]
    assert client.client_metadata["response_types"] == ["code"]  # no implicit grant
    assert wfh.redirect_uris == ["https://workflowhub.example", "https://workflowhub.example/cb"]
    assert wfh.auth_method == "client_secret_post"
    assert wfh.authorize_url == "http://lm.test/oauth2/authorize/workflow_hub"
    assert wfh.token_url == "http://lm.test/oauth2/token"
    assert wfh.callback_url == "http://lm.test/oauth2/authorized/workflow_hub"
    assert _rows(session) == {"registries": 1, "oauth2_clients": 1, "oauth2_tokens": 0}


def test_add_stores_both_secrets(session, wfh):
    store = get_secrets()
    r = wfh.registry
    assert store.get(f"registries/{r.uuid}/client_secret") == "wfh-secret"
    assert store.get(f"oauth2/clients/{wfh.client_id}/client_secret") == wfh.client_secret
    assert _secrets_file() == {
        f"/lifemonitor/test/registries/{r.uuid}/client_secret": "wfh-secret",
        f"/lifemonitor/test/oauth2/clients/{wfh.client_id}/client_secret": wfh.client_secret,
    }


def test_add_with_options(session):
    creds = registries.add_registry(
        session,
        name="Seek Dev",
        type="seek",
        client_id="id",
        client_secret="s",
        api_url="http://seek:3000",
        client_name="seek-dev",
        redirect_uris=["http://seek:3000/a"],
        auth_method="client_secret_basic",
    )
    assert creds.registry.client_name == "seek-dev"
    assert creds.auth_method == "client_secret_basic"
    assert creds.redirect_uris == ["http://seek:3000/a"]
    assert creds.as_dict()["identifier"] == "seek-dev"
    assert creds.as_dict()["client_secret"] == creds.client_secret


def test_as_dict(session, wfh):
    d = wfh.as_dict()
    assert set(d) == {
        "uuid",
        "name",
        "identifier",
        "type",
        "uri",
        "registry_client_id",
        "client_id",
        "client_secret",
        "scopes",
        "grant_types",
        "redirect_uris",
        "client_auth_method",
        "authorize_url",
        "token_url",
        "callback_url",
    }
    assert d["registry_client_id"] == "wfh-app"
    assert d["scopes"] == sorted(S.REGISTRY_CLIENT)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"type": "galaxy"}, BadRequestError, "unsupported registry type"),
        ({"name": "  "}, BadRequestError, "name must not be empty"),
        ({"api_url": "workflowhub.example"}, BadRequestError, "API URL"),
        ({"api_url": "ftp://workflowhub.example"}, BadRequestError, "API URL"),
        ({"api_url": "https://"}, BadRequestError, "API URL"),
        ({"client_secret": ""}, BadRequestError, "must not be empty"),
        ({"client_id": ""}, BadRequestError, "must not be empty"),
        ({"client_name": "Has Caps"}, BadRequestError, "client name"),
        ({"client_name": "-leading"}, BadRequestError, "client name"),
        ({"client_name": "a/b"}, BadRequestError, "client name"),
        ({"name": "!!!"}, BadRequestError, "client name"),
        ({"redirect_uris": "not-a-url"}, BadRequestError, "redirect URI"),
        ({"auth_method": "none"}, BadRequestError, "auth method"),
    ],
)
def test_add_validation_leaves_nothing(session, overrides, error, match):
    with pytest.raises(error, match=match):
        registries.add_registry(session, **{**WFH, **overrides})
    session.rollback()
    assert _rows(session) == EMPTY
    assert _secrets_file() == {}


def test_duplicate_name_conflicts_and_leaves_nothing(session, wfh):
    before = _secrets_file()
    with pytest.raises(ConflictError, match="already exists") as info:
        registries.add_registry(session, **{**WFH, "client_id": "other"})
    assert info.value.status == 409
    with pytest.raises(ConflictError):  # same identifier, other name
        registries.add_registry(session, **{**WFH, "name": "Other", "client_name": "workflow_hub"})
    session.rollback()
    assert _rows(session) == {"registries": 1, "oauth2_clients": 1, "oauth2_tokens": 0}
    assert _secrets_file() == before


def test_add_via_session_scope_rolls_back_everything(db):
    """The production path: a conflict inside session_scope leaves the database as it was."""
    from chalicelib.db import session_scope

    with session_scope() as s:
        registries.add_registry(s, **WFH)
    before = _secrets_file()
    with pytest.raises(ConflictError), session_scope() as s:
        registries.add_registry(s, **{**WFH, "client_id": "x"})
    with session_scope() as s:
        assert _rows(s) == {"registries": 1, "oauth2_clients": 1, "oauth2_tokens": 0}
    assert _secrets_file() == before


def test_failed_secret_write_leaves_no_secret(session, monkeypatch):
    from chalicelib.secrets import FileSecretStore, SecretError

    real_put = FileSecretStore.put
    calls = []

    def flaky_put(self, key, value):
        calls.append(key)
        if len(calls) == 2:
            raise SecretError("parameter store unavailable")
        real_put(self, key, value)

    monkeypatch.setattr(FileSecretStore, "put", flaky_put)
    with pytest.raises(SecretError):
        registries.add_registry(session, **WFH)
    session.rollback()
    assert _rows(session) == EMPTY
    assert _secrets_file() == {}


# --- find / list ------------------------------------------------------------------------


def test_find_by_name_identifier_or_uuid(session, wfh):
    r = wfh.registry
    for ref in ("WorkflowHub", "workflow_hub", r.uuid):
        assert registries.find_registry(session, ref).id == r.id
    with pytest.raises(NotFoundError) as info:
        registries.find_registry(session, "nope")
    assert info.value.extra_info == {"resource_type": "registry"}
    assert registries.get_by_uuid(session, r.uuid).id == r.id
    with pytest.raises(NotFoundError):
        registries.get_by_uuid(session, "WorkflowHub")


def test_list_sorted_by_name(session):
    assert registries.list_registries(session) == []
    for name in ("Zeta", "Alpha", "Mid"):
        registries.add_registry(session, **{**WFH, "name": name})
    assert [r.name for r in registries.list_registries(session)] == ["Alpha", "Mid", "Zeta"]


def test_credentials_reads_the_stored_secret(session, wfh):
    creds = registries.credentials(wfh.registry)
    assert creds.client_secret == wfh.client_secret
    assert registries.credentials(wfh.registry, with_secret=False).client_secret is None


def test_urls_follow_external_server_url(session, wfh, monkeypatch):
    monkeypatch.setenv("EXTERNAL_SERVER_URL", "https://api.lifemonitor.example/")
    creds = registries.credentials(wfh.registry)
    assert creds.authorize_url == "https://api.lifemonitor.example/oauth2/authorize/workflow_hub"
    assert creds.token_url == "https://api.lifemonitor.example/oauth2/token"


# --- update -----------------------------------------------------------------------------


def test_update_fields(session, wfh):
    creds = registries.update_registry(
        session,
        "WorkflowHub",
        name="WFH",
        client_id="new-app",
        client_secret="new-secret",
        api_url="https://wfh2.example/",
        redirect_uris="https://wfh2.example/cb",
        auth_method="client_secret_basic",
    )
    r = creds.registry
    assert (r.name, r.server_client_id, r.uri) == ("WFH", "new-app", "https://wfh2.example")
    assert creds.redirect_uris == ["https://wfh2.example/cb"]
    assert creds.auth_method == "client_secret_basic"
    assert r.oauth_client.client_metadata["client_uri"] == "https://wfh2.example"
    assert get_secrets().get(r.server_secret_key) == "new-secret"
    # Our client's secret is unchanged (and still shown).
    assert creds.client_secret == wfh.client_secret
    assert creds.client_id == wfh.client_id


def test_update_client_name_is_applied(session, wfh):
    creds = registries.update_registry(session, wfh.registry.uuid, client_name="wfhub")
    session.commit()
    assert creds.registry.client_name == "wfhub"
    assert creds.registry.oauth_client.client_name == "wfhub"
    assert creds.registry.oauth_client.client_metadata["client_name"] == "wfhub"
    assert creds.authorize_url == "http://lm.test/oauth2/authorize/wfhub"
    assert creds.callback_url == "http://lm.test/oauth2/authorized/wfhub"
    assert registries.find_registry(session, "wfhub").id == wfh.registry.id
    with pytest.raises(NotFoundError):
        registries.find_registry(session, "workflow_hub")


def test_update_with_no_changes(session, wfh):
    creds = registries.update_registry(session, "workflow_hub")
    assert creds.registry.name == "WorkflowHub"
    assert creds.client_secret == wfh.client_secret


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": " "}, BadRequestError, "name must not be empty"),
        ({"name": "Other"}, ConflictError, "already exists"),
        ({"client_name": "other"}, ConflictError, "already exists"),
        ({"client_name": "Bad Name"}, BadRequestError, "client name"),
        ({"api_url": "nope"}, BadRequestError, "API URL"),
        ({"client_id": ""}, BadRequestError, "must not be empty"),
        ({"client_secret": ""}, BadRequestError, "must not be empty"),
        ({"redirect_uris": "https://ok.example,bad"}, BadRequestError, "redirect URI"),
        ({"auth_method": "none"}, BadRequestError, "auth method"),
        # A valid change together with an invalid one: nothing is applied.
        ({"client_secret": "new", "api_url": "ftp://x"}, BadRequestError, "API URL"),
        ({"client_secret": "new", "auth_method": "x"}, BadRequestError, "auth method"),
    ],
)
def test_update_validation_changes_nothing(session, wfh, kwargs, error, match):
    registries.add_registry(session, **{**WFH, "name": "Other", "client_name": "other"})
    session.commit()
    before = _secrets_file()
    with pytest.raises(error, match=match):
        registries.update_registry(session, "WorkflowHub", **kwargs)
    session.rollback()
    r = registries.find_registry(session, wfh.registry.uuid)
    assert (r.name, r.client_name, r.uri, r.server_client_id) == (
        "WorkflowHub",
        "workflow_hub",
        "https://workflowhub.example",
        "wfh-app",
    )
    assert r.oauth_client.token_endpoint_auth_method == "client_secret_post"
    assert _secrets_file() == before


def test_update_unknown_registry(session):
    with pytest.raises(NotFoundError):
        registries.update_registry(session, "nope", name="x")


def test_rotate_secret(session, wfh):
    old = wfh.client_secret
    assert _token(session, wfh.client_id, old).status == 200
    creds = registries.update_registry(session, "WorkflowHub", rotate_secret=True)
    session.commit()
    new = creds.client_secret
    assert new and new != old
    assert get_secrets().get(wfh.registry.oauth_client.secret_key) == new
    assert registries.credentials(wfh.registry).client_secret == new
    refused = _token(session, wfh.client_id, old)
    assert refused.status == 401
    assert refused.body["error"] == "invalid_client"
    assert _token(session, wfh.client_id, new).status == 200
    # The registry's own secret did not change.
    assert get_secrets().get(wfh.registry.server_secret_key) == "wfh-secret"


# --- delete -----------------------------------------------------------------------------


def test_delete_removes_client_tokens_and_secrets(session, wfh):
    other = registries.add_registry(session, **{**WFH, "name": "Other", "client_name": "other"})
    assert _token(session, wfh.client_id, wfh.client_secret).status == 200
    assert _token(session, other.client_id, other.client_secret).status == 200
    get_secrets().put(wfh.registry.service_token_key, "svc")
    session.commit()
    deleted = registries.delete_registry(session, "workflow_hub")
    session.commit()
    assert deleted.name == "WorkflowHub"
    assert _rows(session) == {"registries": 1, "oauth2_clients": 1, "oauth2_tokens": 1}
    assert session.query(OAuth2Client).one().client_id == other.client_id
    assert session.query(OAuth2Token).one().client_id == other.client_id
    remaining = _secrets_file()
    assert not [k for k in remaining if wfh.registry.uuid in k or wfh.client_id in k]
    assert len(remaining) == 2  # the other registry's two secrets
    with pytest.raises(NotFoundError):
        registries.find_registry(session, "WorkflowHub")
    assert _token(session, wfh.client_id, wfh.client_secret).status in (400, 401)


def test_delete_unknown_registry(session, wfh):
    with pytest.raises(NotFoundError):
        registries.delete_registry(session, "nope")
    assert _rows(session)["registries"] == 1


def test_name_can_be_reused_after_delete(session, wfh):
    registries.delete_registry(session, "WorkflowHub")
    again = registries.add_registry(session, **WFH)
    assert again.registry.client_name == "workflow_hub"
    assert again.client_id != wfh.client_id


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("WorkflowHub", "workflow_hub"),
        ("Seek Dev 2", "seek_dev_2"),
        ("  my-registry  ", "my_registry"),
        ("ABC", "abc"),
        ("already_snake", "already_snake"),
    ],
)
def test_snake_case(name, expected):
    assert registries.snake_case(name) == expected


@pytest.mark.parametrize(("name", "client_name"), [("Github", None), ("LS Hub", "lsaai")])
def test_a_registry_cannot_take_a_built_in_providers_name(session, name, client_name):
    """/oauth2/login/<client name> must name one provider."""
    from chalicelib.models import Registry

    with pytest.raises(BadRequestError, match="built-in login provider"):
        registries.add_registry(
            session,
            name=name,
            type="seek",
            client_id="c",
            client_secret="s",
            api_url="https://hub.example",
            client_name=client_name,
        )
    assert session.query(Registry).count() == 0
