"""Subscriptions to workflows and the notifications they produce."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from chalicelib.models.base import Base, JSONType, Timestamped, UTCDateTime, utcnow, uuid_column
from chalicelib.models.users import User

#: Event names (contract §1.3); "ALL" subscribes to every event.
EVENTS = (
    "ALL",
    "BUILD_FAILED",
    "BUILD_RECOVERED",
    "UNCONFIGURED_EMAIL",
    "GITHUB_WORKFLOW_VERSION",
    "GITHUB_WORKFLOW_ISSUE",
)


class Subscription(Timestamped, Base):
    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("user_id", "workflow_id", "workflow_version_id"),)

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
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)

    recipients: Mapped[list[UserNotification]] = relationship(
        back_populates="notification", cascade="all, delete-orphan", passive_deletes=True
    )


class UserNotification(Base):
    __tablename__ = "user_notifications"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    notification_id: Mapped[int] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE"), primary_key=True
    )
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    emailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Why an e-mail could not be sent (no address, bounce), shown to the user.
    email_error: Mapped[str | None] = mapped_column(Text)

    user: Mapped[User] = relationship()
    notification: Mapped[Notification] = relationship(back_populates="recipients")
