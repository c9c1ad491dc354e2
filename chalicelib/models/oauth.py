"""Our OAuth2 server's clients, tokens and authorization codes (secrets stored hashed)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from chalicelib.models.base import Base, JSONType, Timestamped, UTCDateTime
from chalicelib.models.users import User


class OAuth2Client(Timestamped, Base):
    __tablename__ = "oauth2_clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(48), unique=True, nullable=False)
    # SHA-256 of the secret; None for public clients (auth method "none").
    client_secret_hash: Mapped[str | None] = mapped_column(String(64))
    client_name: Mapped[str] = mapped_column(String(128), nullable=False)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # RFC 7591 metadata: grant_types, response_types, scope, redirect_uris,
    # token_endpoint_auth_method, client_uri.
    client_metadata: Mapped[dict] = mapped_column(JSONType, default=dict, nullable=False)

    user: Mapped[User | None] = relationship()

    @property
    def secret_key(self) -> str:
        """Parameter-store key of the plaintext secret, for clients whose operators must be
        able to read it again (registries: `registry show`)."""
        return f"oauth2/clients/{self.client_id}/client_secret"

    @property
    def scope(self) -> str:
        return self.client_metadata.get("scope", "")

    @property
    def grant_types(self) -> list[str]:
        return list(self.client_metadata.get("grant_types", []))

    @property
    def redirect_uris(self) -> list[str]:
        return list(self.client_metadata.get("redirect_uris", []))

    @property
    def token_endpoint_auth_method(self) -> str:
        return self.client_metadata.get("token_endpoint_auth_method", "client_secret_post")


class OAuth2Token(Base):
    __tablename__ = "oauth2_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth2_clients.client_id", ondelete="CASCADE"), nullable=False, index=True
    )
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_type: Mapped[str] = mapped_column(String(40), nullable=False, default="Bearer")
    access_token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    refresh_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(Text, nullable=False, default="")
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # When the refresh token stops working (None: no refresh token).
    refresh_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # SHA-256 of the authorization code this token (and its rotated successors) came from:
    # a code presented twice revokes them all (RFC 6749 §4.1.2).
    code_hash: Mapped[str | None] = mapped_column(String(64), index=True)

    client: Mapped[OAuth2Client] = relationship()
    user: Mapped[User | None] = relationship()

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self.scope.split())

    # -- authlib's TokenMixin ------------------------------------------------------------
    def check_client(self, client) -> bool:
        return self.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int((self.expires_at - self.issued_at).total_seconds())

    def is_expired(self) -> bool:
        from chalicelib.models.base import utcnow

        return self.expires_at <= utcnow()

    def is_revoked(self) -> bool:
        return self.revoked


class OAuth2AuthorizationCode(Base):
    __tablename__ = "oauth2_authorization_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth2_clients.client_id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    redirect_uri: Mapped[str | None] = mapped_column(Text)
    response_type: Mapped[str | None] = mapped_column(String(40))
    scope: Mapped[str] = mapped_column(Text, nullable=False, default="")
    nonce: Mapped[str | None] = mapped_column(String(256))
    code_challenge: Mapped[str | None] = mapped_column(String(256))
    code_challenge_method: Mapped[str | None] = mapped_column(String(16))
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # Set (atomically) by the one exchange that may use the code.
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # -- authlib's AuthorizationCodeMixin ------------------------------------------------
    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.auth_time.timestamp())
