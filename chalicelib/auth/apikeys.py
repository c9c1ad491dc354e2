"""API keys: created for a user with a set of scopes, shown once, stored as SHA-256."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from chalicelib.auth import scopes as S
from chalicelib.auth.hashing import new_token, token_hash
from chalicelib.auth.principals import Principal
from chalicelib.errors import BadRequestError, NotFoundError, UnauthorizedError
from chalicelib.models import ApiKey, User, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

PREFIX_LENGTH = 8


@dataclass(frozen=True)
class NewApiKey:
    key: str  # the only time the plaintext exists
    record: ApiKey


def create(session: Session, user: User, scopes: list[str] | None = None) -> NewApiKey:
    requested = frozenset(scopes) if scopes else S.USER_API_KEY
    bad = S.unknown(requested)
    if bad:
        raise BadRequestError(f"unknown scope(s): {', '.join(bad)}", valid_scopes=sorted(S.ALL))
    not_for_users = sorted(requested - S.USER_API_KEY)
    if not_for_users:
        raise BadRequestError(f"scope(s) reserved to registry clients: {', '.join(not_for_users)}")
    while True:  # a prefix collision is astronomically unlikely; retry rather than fail
        key = new_token(40)
        if session.query(ApiKey.id).filter_by(prefix=key[:PREFIX_LENGTH]).first() is None:
            break
    record = ApiKey(
        prefix=key[:PREFIX_LENGTH], key_hash=token_hash(key), user=user, scope=S.join(requested)
    )
    session.add(record)
    session.flush()
    return NewApiKey(key=key, record=record)


def list_keys(session: Session, user: User | None = None) -> list[ApiKey]:
    query = session.query(ApiKey).join(ApiKey.user).order_by(User.username, ApiKey.created)
    if user is not None:
        query = query.filter(ApiKey.user_id == user.id)
    return query.all()


def delete(session: Session, prefix: str) -> ApiKey:
    prefix = prefix.strip()
    if len(prefix) < PREFIX_LENGTH:
        raise BadRequestError(f"give at least the first {PREFIX_LENGTH} characters of the key")
    record = session.query(ApiKey).filter_by(prefix=prefix[:PREFIX_LENGTH]).one_or_none()
    # Only the listed prefix or the whole key identify a key: anything in between cannot be
    # checked (we keep no more of the key), so it must not delete one by its first letters.
    if record is None or (len(prefix) > PREFIX_LENGTH and record.key_hash != token_hash(prefix)):
        raise NotFoundError(
            f"no API key matches {prefix[:PREFIX_LENGTH]!r}: give the {PREFIX_LENGTH}-character "
            "prefix shown by `api-key list`, or the whole key"
        )
    session.delete(record)
    session.flush()
    return record


LAST_USED_RESOLUTION = timedelta(minutes=5)


def authenticate(session: Session, key: str) -> Principal:
    """One indexed query; `last_used` is written at most every few minutes, so reads do
    not turn into writes."""
    from sqlalchemy import select

    row = None
    if key:
        row = session.execute(
            select(ApiKey, User.username)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.key_hash == token_hash(key))
        ).first()
    if row is None:
        raise UnauthorizedError("Invalid API key")
    record, username = row
    now = utcnow()
    if record.last_used is None or now - record.last_used > LAST_USED_RESOLUTION:
        record.last_used = now
    return Principal(
        method="api_key", user_id=record.user_id, username=username, scopes=record.scopes
    )
