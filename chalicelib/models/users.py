"""People: users, their identities at external providers, their API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from chalicelib.models.base import Base, JSONType, Timestamped, UTCDateTime


class User(Timestamped, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    email: Mapped[str | None] = mapped_column(String(256))
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # scrypt hash ("scrypt$n$r$p$salt$hash"); None for accounts that only log in elsewhere.
    password_hash: Mapped[str | None] = mapped_column(String(256))
    notifications_enabled: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    # E-mail verification: the SHA-256 of the code mailed, and the address it was mailed
    # to (a code verifies that address only: changing the e-mail voids it).
    email_verification_hash: Mapped[str | None] = mapped_column(String(64))
    email_verification_address: Mapped[str | None] = mapped_column(String(256))
    email_verification_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    identities: Mapped[list[Identity]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )
    api_keys: Mapped[list[ApiKey]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )

    def __repr__(self) -> str:
        return f"<User {self.id} {self.username!r}>"


class Identity(Timestamped, Base):
    """A user's account at an identity provider (GitHub, LS AAI, a WorkflowHub registry)."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("provider", "provider_user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # Provider key: "github", "lsaai", or a registry's client_name.
    provider: Mapped[str] = mapped_column(String(128), nullable=False)
    registry_id: Mapped[int | None] = mapped_column(
        ForeignKey("registries.id", ondelete="CASCADE"), index=True
    )
    provider_user_id: Mapped[str] = mapped_column(String(256), nullable=False)
    user_info: Mapped[dict] = mapped_column(JSONType, default=dict, nullable=False)
    # Tokens from the provider, keyed by scope; refreshed by the login flow.
    tokens: Mapped[dict] = mapped_column(JSONType, default=dict, nullable=False)

    user: Mapped[User] = relationship(back_populates="identities")


class ApiKey(Timestamped, Base):
    """An API key sent as `ApiKey: <key>`; only its SHA-256 is kept."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # First characters of the key, shown in listings and used to delete it.
    prefix: Mapped[str] = mapped_column(String(16), unique=True, nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    scope: Mapped[str] = mapped_column(Text, nullable=False, default="")
    last_used: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="api_keys")

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self.scope.split())
