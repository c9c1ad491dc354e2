"""A person's own account, as the web pages change it: local username/password accounts
(development and tests only: off in the `prod` stage), e-mail and notification settings,
deleting the account."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

from chalicelib.auth.hashing import check_password, hash_password
from chalicelib.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)
from chalicelib.models import User

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: Stages where local accounts are refused: people sign in through a provider there.
NO_LOCAL_ACCOUNTS_STAGES = frozenset({"prod", "production"})
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Checked when the user does not exist, so a wrong name costs as long as a wrong
    password (no user enumeration by timing)."""
    return hash_password("not-a-password-of-anyone")


def local_accounts_enabled() -> bool:
    from chalicelib.config import get_settings

    return get_settings().stage not in NO_LOCAL_ACCOUNTS_STAGES


def _require_local_accounts() -> None:
    if not local_accounts_enabled():
        raise ForbiddenError("Local accounts are disabled here: sign in with a provider")


def get_account(session: Session, user_id: int | None) -> User:
    user = session.get(User, user_id) if user_id is not None else None
    if user is None:
        raise NotFoundError("This account no longer exists")
    return user


def authenticate_local(session: Session, username: str, password: str) -> User:
    """The local user with this name and password; one message for every failure."""
    _require_local_accounts()
    user = None
    if username and len(username) <= 128:
        user = session.query(User).filter_by(username=username).one_or_none()
    stored = user.password_hash if user is not None else None
    ok = check_password(password or "", stored or _dummy_hash())
    if user is None or stored is None or not ok:
        raise UnauthorizedError("Invalid username or password")
    return user


def register_local(
    session: Session, username: str, password: str, confirm: str, email: str | None = None
) -> User:
    """A new local account. Two people racing for one name: one wins, the other gets a
    409 (the unique index decides), never a 500."""
    from sqlalchemy.exc import IntegrityError

    from chalicelib.services import users

    _require_local_accounts()
    if password != confirm:
        raise BadRequestError("The two passwords differ")
    try:
        with session.begin_nested():
            return users.create_user(session, username, password=password, email=email or None)
    except IntegrityError:
        raise ConflictError(f"user {username!r} already exists") from None


def set_password(session: Session, user_id: int, password: str, confirm: str) -> None:
    from chalicelib.services.users import MIN_PASSWORD

    _require_local_accounts()
    if password != confirm:
        raise BadRequestError("The two passwords differ")
    if len(password) < MIN_PASSWORD:
        raise BadRequestError(f"password must have at least {MIN_PASSWORD} characters")
    get_account(session, user_id).password_hash = hash_password(password)
    session.flush()


def set_email(session: Session, user_id: int, email: str) -> User:
    """Change the notification address; a new address must be verified again."""
    email = (email or "").strip()
    if len(email) > 256 or not _EMAIL.match(email):
        raise BadRequestError(f"not an e-mail address: {email!r}")
    user = get_account(session, user_id)
    if user.email != email:
        user.email = email
        user.email_verified = False
    session.flush()
    return user


def set_notifications(session: Session, user_id: int, enabled: bool) -> User:
    user = get_account(session, user_id)
    user.notifications_enabled = bool(enabled)
    session.flush()
    return user


def delete_account(session: Session, user_id: int, confirm_username: str) -> list[str]:
    """Delete the account and what it owns (identities, API keys, OAuth apps and their
    tokens, permissions, subscriptions: the foreign keys cascade), with the workflows it
    alone owns that no registry lists: nobody could read or manage them afterwards. A
    registry's workflows stay in its catalogue. The username must be typed again: a stray
    click deletes nothing. Returns the stored crate locations to remove once committed."""
    from sqlalchemy import delete

    user = get_account(session, user_id)
    if confirm_username != user.username:
        raise BadRequestError("Type your username to confirm the deletion")
    locations = _delete_sole_workflows(session, user.id)
    session.execute(delete(User).where(User.id == user.id))
    session.expunge(user)
    session.flush()
    return locations


def sole_workflows_count(session: Session, user_id: int) -> int:
    """How many workflows deleting this account would delete with it (the page says)."""
    from sqlalchemy import func, select

    return session.scalar(select(func.count()).select_from(_sole_workflows(user_id).subquery()))


def _sole_workflows(user_id: int):
    from sqlalchemy import and_, exists, select

    from chalicelib.models import Permission, RegistryWorkflowVersion, Workflow, WorkflowVersion

    other = Permission.__table__.alias("other")
    return select(Workflow.id).where(
        exists().where(Permission.workflow_id == Workflow.id, Permission.user_id == user_id),
        ~exists().where(and_(other.c.workflow_id == Workflow.id, other.c.user_id != user_id)),
        ~exists().where(
            RegistryWorkflowVersion.workflow_version_id == WorkflowVersion.id,
            WorkflowVersion.workflow_id == Workflow.id,
        ),
    )


def _delete_sole_workflows(session: Session, user_id: int) -> list[str]:
    from sqlalchemy import delete, select

    from chalicelib.models import Workflow, WorkflowVersion
    from chalicelib.services.workflows import forget_secrets

    ids = list(session.scalars(_sole_workflows(user_id).with_for_update(of=Workflow)))
    if not ids:
        return []
    versions = list(
        session.scalars(select(WorkflowVersion).where(WorkflowVersion.workflow_id.in_(ids)))
    )
    locations = [v.crate_location for v in versions if v.crate_location]
    forget_secrets(versions)
    session.execute(delete(Workflow).where(Workflow.id.in_(ids)))
    return locations


def create_api_key(session: Session, user: User):
    """A key with the scopes of the web UI's keys; its plaintext is in the result only."""
    from chalicelib.auth import apikeys

    return apikeys.create(session, user)


def delete_api_key(session: Session, user: User, prefix: str) -> None:
    """Delete one of the user's own keys, named by its listed prefix."""
    from sqlalchemy import delete

    from chalicelib.auth.apikeys import PREFIX_LENGTH
    from chalicelib.models import ApiKey

    prefix = (prefix or "").strip()
    if len(prefix) != PREFIX_LENGTH:
        raise NotFoundError("No such API key among yours")
    deleted = session.execute(
        delete(ApiKey).where(ApiKey.prefix == prefix, ApiKey.user_id == user.id)
    ).rowcount
    if not deleted:
        raise NotFoundError("No such API key among yours")
