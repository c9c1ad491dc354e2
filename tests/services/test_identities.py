"""Identities: what a sign-in leads to, registering a new identity (with a race on
PostgreSQL), merging accounts, listing and disconnecting."""

from __future__ import annotations

import threading

import pytest

from chalicelib.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError


def found(provider="github", uid="583231", username="octocat", token=None, registry_id=None):
    from chalicelib.auth.providers import ProviderIdentity

    return ProviderIdentity(
        provider=provider,
        provider_user_id=uid,
        username=username,
        name="The Octocat",
        email="octocat@github.example",
        user_info={"id": uid, "login": username, "name": "The Octocat"},
        token=token or {"access_token": "gho_" + "x" * 36, "token_type": "bearer"},
        registry_id=registry_id,
    )


def test_unknown_identity_asks_for_a_username(session):
    from chalicelib.models import Identity, User
    from chalicelib.services import identities

    outcome = identities.sign_in(session, found(), None)
    assert outcome.kind == "register"
    assert outcome.username == "octocat"
    assert outcome.pending["provider_user_id"] == "583231"
    # The provider token travels sealed, never in clear.
    assert "gho_" not in str(outcome.pending)
    assert session.query(User).count() == 0 and session.query(Identity).count() == 0


def test_register_then_known_identity_signs_in(session):
    from chalicelib.auth import providers
    from chalicelib.models import Identity
    from chalicelib.services import identities

    pending = identities.sign_in(session, found(), None).pending
    user = identities.register_identity(session, pending, "octo")
    [identity] = session.query(Identity).all()
    assert identity.user_id == user.id and user.email == "octocat@github.example"
    assert "gho_" not in str(identity.tokens)
    assert providers.open_tokens(identity.tokens)["default"]["access_token"].startswith("gho_")
    outcome = identities.sign_in(session, found(token={"access_token": "new"}), None)
    assert (outcome.kind, outcome.user_id) == ("login", user.id)
    assert providers.open_tokens(identity.tokens)["default"]["access_token"] == "new"


def test_register_refuses_bad_or_taken_usernames(session):
    from chalicelib.services import identities, users

    users.create_user(session, "octocat")
    pending = identities.sign_in(session, found(), None).pending
    assert identities.sign_in(session, found(), None).username == "octocat2"
    with pytest.raises(ConflictError):
        identities.register_identity(session, pending, "octocat")
    with pytest.raises(BadRequestError, match="username"):
        identities.register_identity(session, pending, "no spaces")
    with pytest.raises(BadRequestError, match="no sign-in waiting"):
        identities.register_identity(session, {}, "fine")
    identities.register_identity(session, pending, "octo")
    with pytest.raises(ConflictError, match="already registered"):
        identities.register_identity(session, pending, "octo-again")


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        ("First User", "First_User"),
        ("user1", "user1"),
        ("a@b.org", "a"),
        ("__", "user"),
        (None, "user"),
        ("Élodie", "Elodie"),
    ],
)
def test_propose_username(session, hint, expected):
    from chalicelib.services import identities

    assert identities.propose_username(session, hint) == expected


def test_signed_in_person_links_a_new_identity(session, user):
    from chalicelib.services import identities

    outcome = identities.sign_in(session, found(), user.id)
    assert (outcome.kind, outcome.user_id) == ("linked", user.id)
    [view] = identities.list_identities(session, user.id)
    assert (view.provider, view.label, view.provider_user_id) == ("github", "GitHub", "583231")


def test_identity_of_another_account_offers_a_merge(session, user):
    from chalicelib.services import identities

    pending = identities.sign_in(session, found(), None).pending
    other = identities.register_identity(session, pending, "octo")
    outcome = identities.sign_in(session, found(), user.id)
    assert outcome.kind == "merge"
    assert (outcome.user_id, outcome.other_user_id, outcome.other_username) == (
        user.id,
        other.id,
        "octo",
    )


def test_merge_moves_everything(session, user):
    from chalicelib.auth import apikeys, oauth2
    from chalicelib.auth import scopes as S
    from chalicelib.models import (
        ApiKey,
        Identity,
        OAuth2Client,
        Permission,
        Subscription,
        User,
        Workflow,
    )
    from chalicelib.services import identities

    other = identities.register_identity(
        session, identities.sign_in(session, found(), None).pending, "octo"
    )
    shared, theirs = Workflow(name="shared"), Workflow(name="theirs")
    session.add_all([shared, theirs])
    session.flush()
    session.add_all(
        [
            Permission(user_id=user.id, workflow_id=shared.id, roles=["reader"]),
            Permission(user_id=other.id, workflow_id=shared.id, roles=["owner"]),
            Permission(user_id=other.id, workflow_id=theirs.id, roles=["owner"]),
            Subscription(user_id=other.id, workflow_id=theirs.id),
        ]
    )
    key = apikeys.create(session, other).key
    oauth2.create_client(
        session,
        client_name="app",
        scope=S.AUTHORIZATION_CODE_FLOW,
        grant_types=oauth2.APP_GRANT_TYPES,
        response_types=("code",),
        redirect_uris=["https://app.example/cb"],
        owner=other,
    )
    session.flush()
    merged = identities.merge_accounts(session, user.id, other.id)
    assert merged.id == user.id
    assert session.get(User, other.id) is None
    assert {i.provider for i in session.query(Identity).filter_by(user_id=user.id)} == {"github"}
    perms = {p.workflow_id: p.roles for p in session.query(Permission).filter_by(user_id=user.id)}
    assert perms == {shared.id: ["reader", "owner"], theirs.id: ["owner"]}
    assert session.query(Subscription).filter_by(user_id=user.id).count() == 1
    assert session.query(ApiKey).one().user_id == user.id
    assert session.query(OAuth2Client).one().user_id == user.id
    assert apikeys.authenticate(session, key).user_id == user.id
    with pytest.raises(BadRequestError):
        identities.merge_accounts(session, user.id, user.id)
    with pytest.raises(NotFoundError):
        identities.merge_accounts(session, user.id, other.id)


def test_disconnect_never_removes_the_last_way_in(session):
    from chalicelib.services import identities

    pending = identities.sign_in(session, found(), None).pending
    octo = identities.register_identity(session, pending, "octo")
    [only] = identities.list_identities(session, octo)
    with pytest.raises(ForbiddenError, match="only way"):
        identities.disconnect_identity(session, octo, only.id)
    identities.sign_in(session, found(provider="wfh", uid="2", username="user1"), octo.id)
    identities.disconnect_identity(session, octo, only.id)
    assert [i.provider for i in identities.list_identities(session, octo)] == ["wfh"]
    with pytest.raises(NotFoundError):
        identities.disconnect_identity(session, octo, only.id)


def test_disconnect_with_a_password_and_someone_elses_identity(session, user):
    from chalicelib.services import identities, users

    identities.sign_in(session, found(), user.id)
    [mine] = identities.list_identities(session, user)
    bob = users.create_user(session, "bob", password="long enough")
    with pytest.raises(NotFoundError):
        identities.disconnect_identity(session, bob, mine.id)
    identities.disconnect_identity(session, user, mine.id)  # alice has a password
    assert identities.list_identities(session, user) == []


def test_registry_identities_resolve_registry_users(session, registry):
    from chalicelib.auth.principals import Principal
    from chalicelib.errors import UnauthorizedError
    from chalicelib.models import Registry
    from chalicelib.services import identities, users

    reg = session.query(Registry).one()
    pending = identities.sign_in(
        session,
        found(provider=reg.client_name, uid="2", username="user1", registry_id=reg.id),
        None,
    ).pending
    user = identities.register_identity(session, pending, "user1")
    principal = Principal(method="oauth2", registry_id=reg.id, scopes=frozenset())
    assert users.registry_user(session, principal, "2").id == user.id
    assert [u.id for u in users.registry_users(session, reg.id)] == [user.id]
    with pytest.raises(UnauthorizedError):
        users.registry_user(session, principal, "3")


def test_concurrent_registrations_end_in_one_user(postgres):
    """A burst of identical register submissions (double clicks, retries) on the real
    database: one user, one identity, every other attempt a 409."""
    from chalicelib.db import session_scope
    from chalicelib.models import Identity, User
    from chalicelib.services import identities

    with session_scope() as s:
        pending = identities.sign_in(s, found(), None).pending
    results: list[str] = []
    barrier = threading.Barrier(8)

    def attempt():
        barrier.wait()
        try:
            with session_scope() as s:
                identities.register_identity(s, pending, "octo")
            results.append("created")
        except ConflictError:
            results.append("conflict")
        except Exception as exc:  # anything else is the bug this test is about
            results.append(repr(exc))

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["conflict"] * 7 + ["created"], results
    with session_scope() as s:
        assert s.query(User).count() == 1 and s.query(Identity).count() == 1
