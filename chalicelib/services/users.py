"""Users: created by administrators (and, later, by login flows)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from chalicelib.auth.hashing import hash_password
from chalicelib.errors import BadRequestError, ConflictError, NotFoundError
from chalicelib.models import User

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD = 8


def create_user(
    session: Session, username: str, *, password: str | None = None, email: str | None = None
) -> User:
    if not _USERNAME.match(username or ""):
        raise BadRequestError(
            "username must be 1-128 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    if email is not None and not _EMAIL.match(email):
        raise BadRequestError(f"not an e-mail address: {email!r}")
    if password is not None and len(password) < MIN_PASSWORD:
        raise BadRequestError(f"password must have at least {MIN_PASSWORD} characters")
    if session.query(User.id).filter_by(username=username).first() is not None:
        raise ConflictError(f"user {username!r} already exists")
    user = User(
        username=username,
        email=email,
        password_hash=hash_password(password) if password is not None else None,
    )
    session.add(user)
    session.flush()
    return user


def get_user(session: Session, username: str) -> User:
    user = session.query(User).filter_by(username=username).one_or_none()
    if user is None:
        raise NotFoundError(f"no user named {username!r}")
    return user


def list_users(session: Session) -> list[User]:
    return session.query(User).order_by(User.username).all()


def profile(session: Session, principal) -> tuple[User, list, object, dict]:
    """The user, their identities, the calling registry (which sees only its own), and the
    registries those identities belong to."""
    from chalicelib.models import Identity, Registry

    user = session.get(User, principal.user_id)
    if user is None:
        raise NotFoundError("the current user no longer exists")
    identities = list(session.query(Identity).filter_by(user_id=user.id).order_by(Identity.id))
    registry = session.get(Registry, principal.registry_id) if principal.registry_id else None
    if registry is not None:
        identities = [i for i in identities if i.registry_id == registry.id]
    ids = {i.registry_id for i in identities if i.registry_id}
    registries = (
        {r.id: r for r in session.query(Registry).filter(Registry.id.in_(ids))} if ids else {}
    )
    return user, identities, registry, registries


def registry_user(session: Session, principal, person_id: str | int) -> User:
    """Our user behind a registry's person id (LifeMonitor's `/users/{user_id}` and
    `submitter_id` name the person on the registry): they must have logged in to us with
    that registry, else 401."""
    from chalicelib.errors import UnauthorizedError
    from chalicelib.models import Identity

    person_id = str(person_id).strip()
    if not person_id or len(person_id) > 256:
        raise BadRequestError(f"not a registry user id: {person_id!r}")
    user = (
        session.query(User)
        .join(Identity, Identity.user_id == User.id)
        .filter(
            Identity.registry_id == principal.registry_id, Identity.provider_user_id == person_id
        )
        .one_or_none()
    )
    if user is None:
        raise UnauthorizedError(
            f"No user is linked to person '{person_id}' of this registry: they must log in "
            "to LifeMonitor with it first"
        )
    return user


def registry_users(session: Session, registry_id: int) -> list[User]:
    from chalicelib.models import Identity

    return (
        session.query(User)
        .join(Identity, Identity.user_id == User.id)
        .filter(Identity.registry_id == registry_id)
        .order_by(User.id)
        .all()
    )
