"""Workflow registries (WorkflowHub / SEEK instances) and their OAuth2 pairing."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from chalicelib.models.base import Base, Timestamped, uuid_column
from chalicelib.models.oauth import OAuth2Client

REGISTRY_TYPES = ("seek",)


class Registry(Timestamped, Base):
    """A registry pairs two credential sets (contract §4): *our* OAuth2 client, which the
    registry uses to call us, and the registry's own OAuth app (client id here, secret in
    the parameter store), which we use to log users in and call the registry."""

    __tablename__ = "registries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = uuid_column()
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    type: Mapped[str] = mapped_column(String(32), nullable=False, default="seek")
    # The public identifier (LifeMonitor's client_name), e.g. "wfhub".
    client_name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    uri: Mapped[str] = mapped_column(Text, nullable=False)
    # The registry's own OAuth app id; its secret lives in the parameter store.
    server_client_id: Mapped[str] = mapped_column(String(256), nullable=False)
    oauth_client_id: Mapped[int] = mapped_column(
        ForeignKey("oauth2_clients.id", ondelete="RESTRICT"), unique=True, nullable=False
    )

    oauth_client: Mapped[OAuth2Client] = relationship()

    # Parameter-store keys (relative to the stage prefix), by the immutable uuid.
    @property
    def server_secret_key(self) -> str:
        return f"registries/{self.uuid}/client_secret"

    @property
    def service_token_key(self) -> str:
        return f"registries/{self.uuid}/service_token"
