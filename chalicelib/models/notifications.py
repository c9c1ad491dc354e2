"""Subscriptions to workflows and the notifications they produce."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from chalicelib.models.base import Base, JSONType, Timestamped, UTCDateTime, utcnow, uuid_column
from chalicelib.models.testing import BigId
from chalicelib.models.users import User

#: Event names (contract §1.3, plus our STALE); "ALL" subscribes to every event.
EVENTS = (
    "ALL",
    "BUILD_FAILED",
    "BUILD_RECOVERED",
    "STALE",
    "UNCONFIGURED_EMAIL",
    "GITHUB_WORKFLOW_VERSION",
    "GITHUB_WORKFLOW_ISSUE",
)
#: The events this service emits about test instances.
INSTANCE_EVENTS = ("BUILD_FAILED", "BUILD_RECOVERED", "STALE")
#: Our own event: the endpoint of an outbound webhook was disabled after failures.
WEBHOOK_DISABLED = "WEBHOOK_DISABLED"


def _partial(column: str):
    condition = text(f"{column} IS NOT NULL")
    return {"postgresql_where": condition, "sqlite_where": condition}


class Subscription(Timestamped, Base):
    __tablename__ = "subscriptions"
    # One row per (user, workflow) and per (user, version): a unique constraint over both
    # columns never fires (one of them is always NULL, and NULLs are distinct), so two
    # partial unique indexes, which `subscribe`'s upsert targets (migration 0006).
    __table_args__ = (
        Index(
            "uq_subscriptions_user_workflow",
            "user_id",
            "workflow_id",
            unique=True,
            **_partial("workflow_id"),
        ),
        Index(
            "uq_subscriptions_user_version",
            "user_id",
            "workflow_version_id",
            unique=True,
            **_partial("workflow_version_id"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # Exactly one of the two is set: a whole workflow, or one version of it.
    workflow_id: Mapped[int | None] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"), index=True
    )
    workflow_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("workflow_versions.id", ondelete="CASCADE"), index=True
    )
    events: Mapped[list] = mapped_column(JSONType, default=lambda: ["ALL"], nullable=False)

    user: Mapped[User] = relationship()


class Notification(Base):
    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = uuid_column()
    event: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[dict] = mapped_column(JSONType, default=dict, nullable=False)
    created: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, nullable=False, index=True
    )
    # One notification per event: e.g. "BUILD_FAILED:<instance uuid>:<build id>". Inserted
    # with ON CONFLICT DO NOTHING, so a repeated or concurrent write adds nothing.
    dedup_key: Mapped[str | None] = mapped_column(String(255), unique=True)

    recipients: Mapped[list[UserNotification]] = relationship(
        back_populates="notification", cascade="all, delete-orphan", passive_deletes=True
    )


class UserNotification(Base):
    __tablename__ = "user_notifications"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    notification_id: Mapped[int] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    emailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Why an e-mail could not be sent (no address, bounce), shown to the user.
    email_error: Mapped[str | None] = mapped_column(Text)
    # Sending retries: attempts so far, and not before when the next one.
    email_attempts: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", nullable=False
    )
    email_next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()
    notification: Mapped[Notification] = relationship(back_populates="recipients")


class WebhookEndpoint(Timestamped, Base):
    """An HTTPS endpoint that receives the transitions of one workflow (or of all the
    owner's workflows), as signed CloudEvents or as Slack messages."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = uuid_column()
    # The owner: a user, or a registry (its client credentials).
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    registry_id: Mapped[int | None] = mapped_column(
        ForeignKey("registries.id", ondelete="CASCADE"), index=True
    )
    # NULL: every workflow the owner owns (a user) or submitted (a registry).
    workflow_id: Mapped[int | None] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2048), nullable=False)
    format: Mapped[str] = mapped_column(String(16), nullable=False, default="cloudevents")
    events: Mapped[list] = mapped_column(JSONType, default=lambda: ["ALL"], nullable=False)
    # Parameter-store key of the signing secret (never the secret itself).
    secret_key: Mapped[str | None] = mapped_column(String(256))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    disabled_reason: Mapped[str | None] = mapped_column(Text)


class WebhookDelivery(Timestamped, Base):
    """One notification to one endpoint; its uuid is the `webhook-id` (the receiver's
    idempotency key), the same on every retry."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "notification_id"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uuid: Mapped[str] = uuid_column()
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
    )
    notification_id: Mapped[int] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE"), nullable=False, index=True
    )
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)

    endpoint: Mapped[WebhookEndpoint] = relationship()
    notification: Mapped[Notification] = relationship()
