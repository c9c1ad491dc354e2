"""Identities: a person's accounts at login providers, linked to our users (contract §6.2).

After a provider's callback, `sign_in` decides:
  (a) the identity is known → that user is signed in (or, when another user is signed
      in, a merge is offered);
  (b) it is unknown and nobody is signed in → the register-identity form, with a
      proposed username (`register_identity` creates the user and links the identity);
  (c) it is unknown and someone is signed in → it is linked to them ("connect").
`merge_accounts` moves everything one account owns to another and deletes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError
from chalicelib.models import Identity, User

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from chalicelib.auth.providers import ProviderIdentity

_NOT_USERNAME = re.compile(r"[^A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class SignInOutcome:
    kind: str  # "login" | "linked" | "register" | "merge"
    user_id: int | None = None
    username: str | None = None
    # "merge": the account that owns the identity (it would be merged into the signed-in one)
    other_user_id: int | None = None
    other_username: str | None = None
    # "register": the identity awaiting a username (to keep in the session)
    pending: dict[str, Any] | None = None


def _find(session: Session, provider: str, provider_user_id: str) -> Identity | None:
    return (
        session.query(Identity)
        .filter_by(provider=provider, provider_user_id=provider_user_id)
        .one_or_none()
    )


def _refresh(identity: Identity, found: ProviderIdentity) -> None:
    from chalicelib.auth import providers

    identity.user_info = dict(found.user_info)
    providers.store_token(identity, found.token)
    if found.registry_id is not None:
        identity.registry_id = found.registry_id


def pending_identity(found: ProviderIdentity) -> dict[str, Any]:
    """The identity to keep in the session while the person picks a username (its token
    sealed: the session cookie is signed, not encrypted)."""
    from chalicelib.auth import providers

    return {
        "provider": found.provider,
        "provider_user_id": found.provider_user_id,
        "registry_id": found.registry_id,
        "username": found.username,
        "name": found.name,
        "email": found.email,
        "user_info": found.user_info,
        "token": providers.seal_tokens(found.token),
    }


def sign_in(
    session: Session, found: ProviderIdentity, current_user_id: int | None
) -> SignInOutcome:
    identity = _find(session, found.provider, found.provider_user_id)
    current = session.get(User, current_user_id) if current_user_id is not None else None
    if identity is not None:
        _refresh(identity, found)
        session.flush()
        owner = identity.user
        if current is None or current.id == owner.id:
            return SignInOutcome("login", user_id=owner.id, username=owner.username)
        return SignInOutcome(
            "merge",
            user_id=current.id,
            username=current.username,
            other_user_id=owner.id,
            other_username=owner.username,
        )
    if current is not None:
        _link(session, current, found)
        return SignInOutcome("linked", user_id=current.id, username=current.username)
    return SignInOutcome(
        "register",
        pending=pending_identity(found),
        username=propose_username(session, found.username or found.name or found.email),
    )


def _link(session: Session, user: User, found: ProviderIdentity) -> Identity:
    from sqlalchemy.exc import IntegrityError

    from chalicelib.auth import providers

    identity = Identity(
        user_id=user.id,
        provider=found.provider,
        provider_user_id=found.provider_user_id,
        registry_id=found.registry_id,
        user_info=dict(found.user_info),
        tokens=providers.seal_tokens({"default": found.token}),
    )
    try:
        with session.begin_nested():
            session.add(identity)
            session.flush()
    except IntegrityError:
        raise ConflictError(
            f"this {found.provider} account is already linked to a LifeMonitor account"
        ) from None
    return identity


def propose_username(session: Session, hint: str | None) -> str:
    """A free, valid username from the provider's name for the person."""
    import unicodedata

    # "Élodie" → "Elodie": accents dropped rather than the letter.
    ascii_hint = unicodedata.normalize("NFKD", (hint or "").split("@")[0])
    ascii_hint = "".join(c for c in ascii_hint if not unicodedata.combining(c))
    base = _NOT_USERNAME.sub("_", ascii_hint).strip("._-")[:100] or "user"
    if not base[0].isalnum():
        base = "u" + base
    taken = {
        name
        for (name,) in session.query(User.username).filter(User.username.like(f"{base}%")).all()
    }
    if base not in taken:
        return base
    n = 2
    while f"{base}{n}" in taken:
        n += 1
    return f"{base}{n}"


def register_identity(session: Session, pending: dict[str, Any], username: str) -> User:
    """Create the user named `username` and link the pending identity to it. Two identical
    submissions at once end in one user: the second gets 409."""
    from sqlalchemy.exc import IntegrityError

    from chalicelib.services import users

    if not isinstance(pending, dict) or not pending.get("provider"):
        raise BadRequestError("there is no sign-in waiting for a username: sign in again")
    username = (username or "").strip()
    if _find(session, pending["provider"], str(pending["provider_user_id"])) is not None:
        raise ConflictError("this account is already registered: sign in with it instead")
    try:
        with session.begin_nested():
            user = users.create_user(session, username, email=pending.get("email") or None)
            session.add(
                Identity(
                    user_id=user.id,
                    provider=pending["provider"],
                    provider_user_id=str(pending["provider_user_id"]),
                    registry_id=pending.get("registry_id"),
                    user_info=dict(pending.get("user_info") or {}),
                    tokens=_pending_tokens(pending),
                )
            )
            session.flush()
    except IntegrityError:
        raise ConflictError(
            f"the username {username!r} or this account was registered meanwhile"
        ) from None
    return user


def _pending_tokens(pending: dict[str, Any]) -> dict:
    from chalicelib.auth import providers

    token = providers.open_tokens(pending.get("token"))
    return providers.seal_tokens({"default": token}) if token else {}


# --- the profile page ------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentityView:
    id: int
    provider: str
    label: str  # the provider's name for people
    provider_user_id: str
    name: str | None
    profile_url: str | None
    created: Any


def list_identities(session: Session, user: User | int) -> list[IdentityView]:
    from chalicelib.auth.providers import LABELS
    from chalicelib.models import Registry

    user_id = user if isinstance(user, int) else user.id
    rows = session.query(Identity).filter_by(user_id=user_id).order_by(Identity.id).all()
    labels = {r.client_name: r.name for r in session.query(Registry)}
    labels.update(LABELS)
    return [
        IdentityView(
            id=i.id,
            provider=i.provider,
            label=labels.get(i.provider, i.provider),
            provider_user_id=i.provider_user_id,
            name=(i.user_info or {}).get("name") or (i.user_info or {}).get("login"),
            profile_url=(i.user_info or {}).get("profile"),
            created=i.created,
        )
        for i in rows
    ]


def disconnect_identity(session: Session, user: User | int, identity_id: int) -> None:
    """Unlink one identity; never the last way to sign in (no password, no other identity)."""
    user_id = user if isinstance(user, int) else user.id
    identity = session.get(Identity, identity_id)
    if identity is None or identity.user_id != user_id:
        raise NotFoundError("no such identity on your account")
    owner = session.get(User, user_id)
    others = session.query(Identity.id).filter(
        Identity.user_id == user_id, Identity.id != identity_id
    )
    if owner.password_hash is None and others.first() is None:
        raise ForbiddenError(
            "this is the only way to sign in to your account: connect another one first"
        )
    session.delete(identity)
    session.flush()


# --- merging accounts -----------------------------------------------------------------------


def merge_accounts(session: Session, target: User | int, source: User | int) -> User:
    """Move everything `source` owns to `target` (workflows' permissions, submissions,
    subscriptions, notifications, API keys, identities, OAuth clients and tokens — every
    row of every table referring to users), then delete `source`. Where both own the same
    thing (a permission on one workflow), the target keeps one row, roles united."""
    from sqlalchemy import and_, delete, exists, select, update

    from chalicelib.models import Base, Permission

    target_id = target if isinstance(target, int) else target.id
    source_id = source if isinstance(source, int) else source.id
    if target_id == source_id:
        raise BadRequestError("an account cannot be merged into itself")
    target_user = session.get(User, target_id)
    source_user = session.get(User, source_id)
    if target_user is None or source_user is None:
        raise NotFoundError("the account to merge no longer exists")
    session.flush()

    # Permissions on the same workflow: unite the roles on the target's row.
    theirs = {p.workflow_id: p for p in session.query(Permission).filter_by(user_id=source_id)}
    if theirs:
        for mine in session.query(Permission).filter(
            Permission.user_id == target_id, Permission.workflow_id.in_(theirs)
        ):
            roles = list(dict.fromkeys([*mine.roles, *theirs[mine.workflow_id].roles]))
            mine.roles = roles
        session.flush()

    for table in Base.metadata.sorted_tables:
        if table.name == "users":
            continue
        for column in table.columns:
            if not any(fk.column.table.name == "users" for fk in column.foreign_keys):
                continue
            # Rows that would collide with the target's on a unique key are dropped.
            for key in _unique_keys(table):
                if column.name not in key:
                    continue
                others = [table.c[name] for name in key if name != column.name]
                target_rows = table.alias("target_rows")
                conditions = [target_rows.c[column.name] == target_id] + [
                    target_rows.c[o.name] == o for o in others
                ]
                session.execute(
                    delete(table).where(
                        column == source_id, exists(select(1).where(and_(*conditions)))
                    )
                )
            session.execute(update(table).where(column == source_id).values({column: target_id}))
    if target_user.email is None and source_user.email:
        target_user.email = source_user.email
        target_user.email_verified = source_user.email_verified
    if target_user.password_hash is None and source_user.password_hash:
        target_user.password_hash = source_user.password_hash
    session.flush()
    session.expire_all()
    session.delete(session.get(User, source_id))
    session.flush()
    return session.get(User, target_id)


def _unique_keys(table) -> list[list[str]]:
    from sqlalchemy import UniqueConstraint

    keys = [
        [c.name for c in con.columns]
        for con in table.constraints
        if isinstance(con, UniqueConstraint)
    ]
    keys += [[c.name for c in index.columns] for index in table.indexes if index.unique]
    if table.primary_key is not None and len(table.primary_key.columns) > 1:
        keys.append([c.name for c in table.primary_key.columns])
    return keys


# --- login-provider tokens, for administrators ------------------------------------------------


def invalidate_tokens(session: Session, user: User) -> dict[str, int]:
    """Mark every provider token of the user's identities expired: the next use refreshes
    it (or, without a refresh token, the person signs in again). Counts the identities
    and tokens affected (identities without tokens are not)."""
    import time

    from chalicelib.auth import providers

    now = int(time.time())
    identities = tokens = 0
    for identity in session.query(Identity).filter_by(user_id=user.id).order_by(Identity.id):
        stored = providers.open_tokens(identity.tokens)
        if not stored:
            continue
        for token in stored.values():
            token["expires_at"] = now
        identity.tokens = providers.seal_tokens(stored)
        identities += 1
        tokens += len(stored)
    session.flush()
    return {"identities": identities, "tokens": tokens}


@dataclass(frozen=True)
class TokenRefresh:
    """What refreshing one identity's tokens came to."""

    identity_id: int
    username: str
    provider: str
    outcome: str  # "refreshed" | "skipped" (nothing to refresh) | "failed"
    reason: str | None = None
    expires_at: int | None = None  # of the (first) refreshed token

    def as_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity_id,
            "username": self.username,
            "provider": self.provider,
            "outcome": self.outcome,
            "reason": self.reason,
            "expires_at": self.expires_at,
        }


def select_identities(
    session: Session,
    *,
    user: User | None = None,
    identity_id: int | None = None,
    everyone: bool = False,
) -> list[Identity]:
    """The identities an administrator named: one (`identity_id`, of `user` if given), a
    user's, or everyone's."""
    query = session.query(Identity).order_by(Identity.id)
    if identity_id is not None:
        identity = session.get(Identity, identity_id)
        if identity is None or (user is not None and identity.user_id != user.id):
            owner = f" of user {user.username!r}" if user is not None else ""
            raise NotFoundError(f"no identity {identity_id}{owner}")
        return [identity]
    if user is not None:
        return list(query.filter_by(user_id=user.id))
    if everyone:
        return list(query)
    raise BadRequestError("say whose tokens: a user, an identity, or all")


def refresh_tokens(session: Session, identities: list[Identity]) -> list[TokenRefresh]:
    """Refresh every token of these identities at their providers now (expired or not).
    A provider that is down or refuses fails that identity only (its tokens stay as they
    were); an identity without a refresh token is skipped. Each success is committed at
    once: the provider has already rotated the refresh token, and a later failure must
    not lose the new one."""
    from chalicelib.auth import providers

    outcomes = []
    for identity in identities:
        username = identity.user.username
        base = {"identity_id": identity.id, "username": username, "provider": identity.provider}
        keys = list(providers.open_tokens(identity.tokens)) or [None]
        expires_at = None
        refreshed = 0
        problem: providers.ProviderError | None = None
        for key in keys:
            try:
                providers.renew_token(session, identity, key)
            except providers.NoRefreshToken as exc:
                problem = problem or exc
                continue
            except providers.ProviderError as exc:
                problem = exc
                break
            refreshed += 1
            if expires_at is None:
                expires_at = providers.open_tokens(identity.tokens)[key].get("expires_at")
            session.commit()
        if isinstance(problem, providers.NoRefreshToken) and not refreshed:
            outcome = TokenRefresh(**base, outcome="skipped", reason=problem.detail)
        elif problem is not None and not isinstance(problem, providers.NoRefreshToken):
            outcome = TokenRefresh(**base, outcome="failed", reason=problem.detail)
        else:
            outcome = TokenRefresh(**base, outcome="refreshed", expires_at=expires_at)
        outcomes.append(outcome)
    return outcomes
