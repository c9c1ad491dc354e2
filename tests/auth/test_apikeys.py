"""API keys: creation with scopes, hashed storage, authentication and deletion."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from chalicelib.auth import apikeys
from chalicelib.auth import scopes as S
from chalicelib.auth.hashing import token_hash
from chalicelib.errors import BadRequestError, NotFoundError, UnauthorizedError
from chalicelib.models import ApiKey
from chalicelib.services import users


@pytest.fixture
def alice(session):
    return users.create_user(session, "alice", email="a@example.org")


def _keys(session) -> int:
    return session.execute(select(func.count()).select_from(ApiKey)).scalar_one()


def test_default_scopes_are_all_but_a_registrys_workflow_scopes(session, alice):
    """LifeMonitor's UI keys: every scope except registry.workflow.* and
    registry.user.workflow.* (contract §6.3)."""
    new = apikeys.create(session, alice)
    expected = new.record.scopes
    assert expected == {
        "registry.info",
        "registry.user",
        "workflow.read",
        "workflow.write",
        "testingService.read",
        "testingService.write",
        "user.profile",
        "user.workflow.read",
        "user.workflow.write",
    }
    assert new.record.scope == " ".join(sorted(expected))


def test_empty_scope_list_means_default(session, alice):
    assert apikeys.create(session, alice, []).record.scopes == S.USER_API_KEY


def test_explicit_scopes(session, alice):
    new = apikeys.create(session, alice, ["workflow.read", "user.profile", "workflow.read"])
    assert new.record.scopes == {"workflow.read", "user.profile"}
    assert new.record.scope == "user.profile workflow.read"


@pytest.mark.parametrize(
    ("scopes", "match"),
    [
        (["read"], "unknown scope"),
        (["workflow.read", "workflow.delete"], "unknown scope"),
        (["registry.user.workflow.read"], "reserved to registry clients"),
        (["workflow.read", "registry.workflow.write"], "reserved to registry clients"),
    ],
)
def test_bad_scopes_refused_and_nothing_stored(session, alice, scopes, match):
    with pytest.raises(BadRequestError, match=match) as info:
        apikeys.create(session, alice, scopes)
    assert info.value.status == 400
    assert _keys(session) == 0


def test_unknown_scope_error_lists_valid_scopes(session, alice):
    with pytest.raises(BadRequestError) as info:
        apikeys.create(session, alice, ["nope"])
    assert info.value.extra_info["valid_scopes"] == sorted(S.ALL)


def test_only_the_hash_is_stored(session, alice):
    new = apikeys.create(session, alice)
    session.commit()
    record = session.query(ApiKey).one()
    assert record.key_hash == token_hash(new.key)
    assert record.key_hash != new.key
    assert record.prefix == new.key[: apikeys.PREFIX_LENGTH]
    assert len(new.key) >= 40
    columns = [getattr(record, c.key) for c in ApiKey.__table__.columns]
    assert new.key not in [str(v) for v in columns]


def test_keys_are_distinct(session, alice):
    a, b = apikeys.create(session, alice), apikeys.create(session, alice)
    assert a.key != b.key
    assert a.record.prefix != b.record.prefix


def test_authenticate(session, alice):
    new = apikeys.create(session, alice, ["workflow.read"])
    session.commit()
    assert new.record.last_used is None
    principal = apikeys.authenticate(session, new.key)
    assert principal.method == "api_key"
    assert principal.user_id == alice.id
    assert principal.username == "alice"
    assert principal.scopes == frozenset({"workflow.read"})
    assert principal.is_user and not principal.is_registry and not principal.is_anonymous
    assert new.record.last_used is not None


@pytest.mark.parametrize("bad", ["", "nope", "x" * 54])
def test_bad_key_is_unauthorized(session, alice, bad):
    apikeys.create(session, alice)
    with pytest.raises(UnauthorizedError):
        apikeys.authenticate(session, bad)


def test_prefix_alone_does_not_authenticate(session, alice):
    new = apikeys.create(session, alice)
    with pytest.raises(UnauthorizedError):
        apikeys.authenticate(session, new.record.prefix)


def test_list_keys(session, alice):
    bob = users.create_user(session, "bob")
    k1 = apikeys.create(session, alice)
    k2 = apikeys.create(session, bob)
    assert {k.prefix for k in apikeys.list_keys(session)} == {k1.record.prefix, k2.record.prefix}
    assert [k.prefix for k in apikeys.list_keys(session, bob)] == [k2.record.prefix]


def test_delete_by_prefix(session, alice):
    keep = apikeys.create(session, alice)
    gone = apikeys.create(session, alice)
    deleted = apikeys.delete(session, gone.key[:8])
    assert deleted.prefix == gone.record.prefix
    assert [k.prefix for k in session.query(ApiKey)] == [keep.record.prefix]
    with pytest.raises(UnauthorizedError):
        apikeys.authenticate(session, gone.key)
    assert apikeys.authenticate(session, keep.key).username == "alice"


def test_delete_by_whole_key(session, alice):
    new = apikeys.create(session, alice)
    apikeys.delete(session, f"  {new.key}\n")
    assert _keys(session) == 0


@pytest.mark.parametrize("prefix", ["", "abc", "1234567"])
def test_too_short_prefix_refused(session, alice, prefix):
    new = apikeys.create(session, alice)
    with pytest.raises(BadRequestError, match="at least the first 8"):
        apikeys.delete(session, prefix or new.key[:7])
    assert _keys(session) == 1


def test_delete_unknown_prefix(session, alice):
    apikeys.create(session, alice)
    with pytest.raises(NotFoundError):
        apikeys.delete(session, "zzzzzzzz")
    assert _keys(session) == 1


def test_delete_refuses_a_long_wrong_key(session, alice):
    new = apikeys.create(session, alice)
    wrong = new.key[:8] + "x" * (len(new.key) - 8)
    with pytest.raises(NotFoundError):
        apikeys.delete(session, wrong)
    assert _keys(session) == 1


def test_delete_refuses_a_prefix_the_key_does_not_start_with(session, alice):
    new = apikeys.create(session, alice)
    wrong = new.key[:8] + ("A" if new.key[8] != "A" else "B") + "not-the-key"
    with pytest.raises(NotFoundError):
        apikeys.delete(session, wrong)
    assert _keys(session) == 1


def test_deleting_the_user_deletes_the_keys(session, alice):
    apikeys.create(session, alice)
    session.delete(alice)
    session.flush()
    assert _keys(session) == 0
