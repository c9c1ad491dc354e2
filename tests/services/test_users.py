"""Users: creation with validation, lookup and listing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from chalicelib.auth.hashing import check_password
from chalicelib.errors import BadRequestError, ConflictError, NotFoundError
from chalicelib.models import User
from chalicelib.services import users


def _count(session) -> int:
    return session.execute(select(func.count()).select_from(User)).scalar_one()


def test_create_with_password_and_email(session):
    user = users.create_user(session, "alice", password="correct horse", email="a@example.org")
    assert user.id is not None
    assert user.email == "a@example.org"
    assert user.password_hash and "correct horse" not in user.password_hash
    assert check_password("correct horse", user.password_hash)
    assert not check_password("wrong horse", user.password_hash)
    assert user.created.tzinfo is not None


def test_create_without_password(session):
    user = users.create_user(session, "bob")
    assert user.password_hash is None
    assert user.email is None
    assert not check_password("", user.password_hash)


@pytest.mark.parametrize(
    "username",
    ["", " ", "-dash", ".dot", "_under", "has space", "x" * 129, "ü", "a/b", "a@b"],
)
def test_bad_usernames(session, username):
    with pytest.raises(BadRequestError, match="username"):
        users.create_user(session, username)
    assert _count(session) == 0


@pytest.mark.parametrize("username", ["a", "A1", "john.doe", "jane_doe-2", "x" * 128])
def test_good_usernames(session, username):
    assert users.create_user(session, username).username == username


@pytest.mark.parametrize("email", ["", "plain", "a@b", "a b@example.org", "@example.org"])
def test_bad_email(session, email):
    with pytest.raises(BadRequestError, match="e-mail"):
        users.create_user(session, "alice", email=email)
    assert _count(session) == 0


def test_short_password(session):
    with pytest.raises(BadRequestError, match="at least 8"):
        users.create_user(session, "alice", password="1234567")
    assert _count(session) == 0
    assert users.create_user(session, "alice", password="12345678").password_hash


def test_duplicate_username(session):
    users.create_user(session, "alice")
    with pytest.raises(ConflictError, match="already exists") as info:
        users.create_user(session, "alice", email="other@example.org")
    assert info.value.status == 409
    assert _count(session) == 1


def test_get_user(session):
    created = users.create_user(session, "alice")
    assert users.get_user(session, "alice") is created
    with pytest.raises(NotFoundError, match="no user named 'nobody'"):
        users.get_user(session, "nobody")
    with pytest.raises(NotFoundError):
        users.get_user(session, "ALICE")  # exact match


def test_list_users_sorted(session):
    assert users.list_users(session) == []
    for name in ("carol", "alice", "bob"):
        users.create_user(session, name)
    assert [u.username for u in users.list_users(session)] == ["alice", "bob", "carol"]
