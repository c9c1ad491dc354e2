"""Webhook deliveries already acted on: a replayed signed delivery is recognised by its id
across Lambda containers (the database, not a container's memory, remembers it)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from chalicelib.models.base import Base, UTCDateTime, utcnow


class ReceivedDelivery(Base):
    __tablename__ = "received_webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("provider", "delivery_id"),
        Index("ix_received_webhook_deliveries_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(16), nullable=False)  # "github"
    delivery_id: Mapped[str] = mapped_column(String(128), nullable=False)  # X-GitHub-Delivery
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
