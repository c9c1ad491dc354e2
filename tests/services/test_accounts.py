"""Accounts and OAuth apps as services: local accounts (and their race), e-mail, deletion
cascading to what the account owns; apps confined to their owner, tokens revoked when an
app loses scopes, is rotated or deleted."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from chalicelib.errors import BadRequestError, ConflictError, NotFoundError, UnauthorizedError


def test_concurrent_local_registrations_end_in_one_user(postgres):
    from chalicelib.db import session_scope
    from chalicelib.models import User
    from chalicelib.services import accounts

    results: list[str] = []
    barrier = threading.Barrier(8)

    def attempt():
        barrier.wait()
        try:
            with session_scope() as s:
                accounts.register_local(s, "carol", "long enough", "long enough")
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
        assert s.query(User).count() == 1


def test_authenticate_local(session, user):
    from chalicelib.services import accounts

    assert accounts.authenticate_local(session, "alice", "correct horse").username == "alice"
    for name, password in [("alice", "wrong"), ("nobody", "correct horse"), ("", "")]:
        with pytest.raises(UnauthorizedError, match="Invalid username or password"):
            accounts.authenticate_local(session, name, password)


def test_account_without_password_cannot_log_in_locally(session):
    from chalicelib.services import accounts, users

    users.create_user(session, "identity-only")
    with pytest.raises(UnauthorizedError):
        accounts.authenticate_local(session, "identity-only", "")


def test_set_email_resets_verification(session, user):
    from chalicelib.services import accounts, users

    alice = users.get_user(session, "alice")
    alice.email_verified = True
    accounts.set_email(session, alice.id, "a@example.org")  # same address: still verified
    assert alice.email_verified
    accounts.set_email(session, alice.id, " b@example.org ")
    assert alice.email == "b@example.org" and not alice.email_verified
    with pytest.raises(BadRequestError):
        accounts.set_email(session, alice.id, "nope")


def _app(session, owner, scopes=("user.profile", "workflow.read")):
    from chalicelib.services import oauth_apps

    return oauth_apps.create_app(
        session, owner, name="App", redirect_uris="https://app.example/cb", scopes=list(scopes)
    )


def _token(session, client_id, user_id, scope="user.profile workflow.read"):
    from chalicelib.auth.hashing import new_token, token_hash
    from chalicelib.models import OAuth2Token, utcnow

    token = OAuth2Token(
        client_id=client_id,
        user_id=user_id,
        access_token_hash=token_hash(new_token()),
        scope=scope,
        issued_at=utcnow(),
        expires_at=utcnow() + timedelta(hours=1),
    )
    session.add(token)
    session.flush()
    return token


def test_delete_account_removes_what_it_owns(db):
    from chalicelib.auth import apikeys
    from chalicelib.db import session_scope
    from chalicelib.models import ApiKey, Identity, OAuth2Client, OAuth2Token, User
    from chalicelib.services import accounts, users

    with session_scope() as s:
        alice = users.create_user(s, "alice", password="correct horse")
        bob = users.create_user(s, "bob", password="bob password")
        apikeys.create(s, alice)
        apikeys.create(s, bob)
        new = _app(s, alice)
        _token(s, new.client.client_id, alice.id)
        s.add(Identity(user=alice, provider="github", provider_user_id="1"))
        alice_id = alice.id
    with session_scope() as s, pytest.raises(BadRequestError):
        accounts.delete_account(s, alice_id, "not-alice")
    with session_scope() as s:
        accounts.delete_account(s, alice_id, "alice")
    with session_scope() as s:
        assert [u.username for u in s.query(User)] == ["bob"]
        assert s.query(ApiKey).count() == 1
        assert s.query(OAuth2Client).count() == 0 and s.query(OAuth2Token).count() == 0
        assert s.query(Identity).count() == 0


def test_oauth_app_scopes_narrowed_revokes_tokens(session, user):
    from chalicelib.services import oauth_apps, users

    alice = users.get_user(session, "alice")
    new = _app(session, alice)
    token = _token(session, new.client.client_id, alice.id)
    oauth_apps.update_app(
        session,
        alice.id,
        new.client.client_id,
        name="App 2",
        redirect_uris=["https://app.example/cb", "https://app.example/other"],
        scopes=["user.profile", "workflow.read", "workflow.write"],
    )
    assert not token.revoked  # wider: nothing taken away
    oauth_apps.update_app(
        session,
        alice.id,
        new.client.client_id,
        name="App 2",
        redirect_uris="https://app.example/cb",
        scopes=["user.profile"],
    )
    session.refresh(token)
    assert token.revoked


def test_oauth_app_rotation_revokes_tokens_and_old_secret(session, user):
    from chalicelib.auth.hashing import token_hash
    from chalicelib.services import oauth_apps, users

    alice = users.get_user(session, "alice")
    new = _app(session, alice)
    token = _token(session, new.client.client_id, alice.id)
    secret = oauth_apps.rotate_secret(session, alice.id, new.client.client_id)
    session.refresh(token)
    session.refresh(new.client)
    assert token.revoked
    assert new.client.client_secret_hash == token_hash(secret) != token_hash(new.client_secret)


def test_oauth_apps_are_their_owners_only(session, user):
    from chalicelib.services import oauth_apps, users

    alice = users.get_user(session, "alice")
    bob = users.create_user(session, "bob")
    new = _app(session, bob)
    assert oauth_apps.list_apps(session, alice.id) == []
    for call in (
        lambda: oauth_apps.get_app(session, alice.id, new.client.client_id),
        lambda: oauth_apps.delete_app(session, alice.id, new.client.client_id),
        lambda: oauth_apps.rotate_secret(session, alice.id, new.client.client_id),
    ):
        with pytest.raises(NotFoundError):
            call()


@pytest.mark.parametrize(
    ("uris", "scopes"),
    [
        ("", ["user.profile"]),
        ("not-a-url", ["user.profile"]),
        ("https://app.example/cb#frag", ["user.profile"]),
        ("javascript:alert(1)", ["user.profile"]),
        ("https://app.example/cb", []),
        ("https://app.example/cb", ["registry.workflow.write"]),
        ("https://app.example/cb", ["no.such.scope"]),
    ],
)
def test_oauth_app_bad_input(session, user, uris, scopes):
    from chalicelib.models import OAuth2Client
    from chalicelib.services import oauth_apps, users

    with pytest.raises(BadRequestError):
        oauth_apps.create_app(
            session, users.get_user(session, "alice"), name="x", redirect_uris=uris, scopes=scopes
        )
    assert session.query(OAuth2Client).count() == 0


def test_delete_account_takes_the_workflows_only_it_could_reach(client, registry):
    """Alice's workflows that she alone owns and no registry lists go with her account
    (rows, stored crates); one Bob co-owns and one a registry lists stay."""
    from sqlalchemy import select

    from chalicelib.db import session_scope
    from chalicelib.models import Permission, RegistryWorkflowVersion, Workflow, WorkflowVersion
    from chalicelib.services import accounts
    from tests.support import api_data

    alice = api_data.make_user("alice")
    bob = api_data.make_user("bob")
    uuids = {}
    for name, public in [
        ("private", False),
        ("public", True),
        ("shared", False),
        ("listed", False),
    ]:
        r = api_data.submit(
            client,
            alice,
            {
                "rocrate": api_data.b64(api_data.crate(name)),
                "version": "1",
                "name": name,
                "public": public,
            },
        )
        assert r.status_code == 201, r.body
        uuids[name] = r.json_body["uuid"]
    with session_scope() as s:
        wf = {w.name: w for w in s.scalars(select(Workflow))}
        s.add(Permission(user_id=bob.user_id, workflow_id=wf["shared"].id))
        version = s.scalars(
            select(WorkflowVersion).where(WorkflowVersion.workflow_id == wf["listed"].id)
        ).one()
        s.add(
            RegistryWorkflowVersion(
                registry_id=registry.registry.id, workflow_version_id=version.id, identifier="7"
            )
        )
        locations = {
            w.name: s.scalar(
                select(WorkflowVersion.crate_location).where(WorkflowVersion.workflow_id == w.id)
            )
            for w in wf.values()
        }
    assert all(locations.values())
    with session_scope() as s:
        assert accounts.sole_workflows_count(s, alice.user_id) == 2
    with session_scope() as s:
        removed = accounts.delete_account(s, alice.user_id, "alice")
    assert sorted(removed) == sorted([locations["private"], locations["public"]])
    with session_scope() as s:
        assert sorted(s.scalars(select(Workflow.name))) == ["listed", "shared"]
        assert s.scalar(select(Permission.user_id)) == bob.user_id
    r = client.http.get(f"/workflows/{uuids['shared']}", headers=bob.headers)
    assert r.status_code == 200
    r = client.http.get(f"/workflows/{uuids['public']}")
    assert r.status_code == 404
