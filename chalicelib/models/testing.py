"""Test suites, test instances, CI services and the durable build history."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from chalicelib.models.base import Base, JSONType, Timestamped, UTCDateTime, uuid_column
from chalicelib.models.limits import NAME_MAX, URL_MAX
from chalicelib.models.workflows import WorkflowVersion
from chalicelib.status import NOT_AVAILABLE

#: CI build states (contract §2).
BUILD_STATUSES = ("passed", "failed", "error", "aborted", "running", "waiting")
#: States that count for the aggregate status; the others are skipped.
COMPLETED_STATUSES = frozenset({"passed", "failed", "error"})

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer, "sqlite")


# Hosts whose CI type is a fact, not something a crate may claim (issue 9: a crate saying
# `api.github.com` runs Jenkins must not change what every other user's crate gets).
WELL_KNOWN_HOSTS: dict[str, str] = {
    **dict.fromkeys(("github.com", "www.github.com", "api.github.com"), "github"),
    **{
        f"{prefix}travis-ci.{tld}": "travis"
        for prefix in ("", "api.", "app.", "www.")
        for tld in ("com", "org")
    },
    **dict.fromkeys(("gitlab.com", "www.gitlab.com"), "gitlab"),
}


def well_known_type(url: str) -> str | None:
    """The fixed service type of a well-known CI host, else None."""
    from urllib.parse import urlsplit

    try:
        host = (urlsplit(url.strip()).hostname or "").lower().rstrip(".")
    except ValueError:
        return None
    return WELL_KNOWN_HOSTS.get(host)


class TestingService(Timestamped, Base):
    """A CI server (Jenkins, GitHub Actions, Travis, GitLab), shared by its instances.

    A service is identified by its type **and** URL (migration 0003): two crates naming the
    same URL with different types get two services, so no crate can change or block the
    type another user's instances rely on."""

    __tablename__ = "testing_services"
    __table_args__ = (UniqueConstraint("type", "url"),)
    __test__ = False  # not a pytest class

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = uuid_column()
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    url: Mapped[str] = mapped_column(String(1024), nullable=False)
    # Set when the host rate-limits us; the scheduler skips it until then.
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TestSuite(Timestamped, Base):
    __tablename__ = "test_suites"
    __test__ = False

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = uuid_column()
    workflow_version_id: Mapped[int] = mapped_column(
        ForeignKey("workflow_versions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    roc_suite: Mapped[str | None] = mapped_column(String(512))  # crate @id, e.g. "#test1"
    name: Mapped[str | None] = mapped_column(Text, info={"max_length": NAME_MAX})
    # {path, test_engine: {type, version}} from the crate's TestDefinition.
    definition: Mapped[dict | None] = mapped_column(JSONType)
    # Stored aggregate status of this suite alone (services/status_upkeep.py).
    status: Mapped[str] = mapped_column(
        String(16), default=NOT_AVAILABLE, server_default=NOT_AVAILABLE, nullable=False
    )
    status_reason: Mapped[str | None] = mapped_column(Text)

    workflow_version: Mapped[WorkflowVersion] = relationship()
    instances: Mapped[list[TestInstance]] = relationship(
        back_populates="suite", cascade="all, delete-orphan", passive_deletes=True
    )


class TestInstance(Timestamped, Base):
    __tablename__ = "test_instances"
    __test__ = False
    __table_args__ = (Index("ix_test_instances_due", "next_check_at", "lease_until"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = uuid_column()
    suite_id: Mapped[int] = mapped_column(
        ForeignKey("test_suites.id", ondelete="CASCADE"), nullable=False, index=True
    )
    roc_instance: Mapped[str | None] = mapped_column(String(512))  # e.g. "#test1_1"
    name: Mapped[str | None] = mapped_column(Text, info={"max_length": NAME_MAX})
    resource: Mapped[str] = mapped_column(
        Text, nullable=False, info={"max_length": URL_MAX}
    )  # job path, workflow file, …
    managed: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    testing_service_id: Mapped[int] = mapped_column(
        ForeignKey("testing_services.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    parameters: Mapped[dict] = mapped_column(JSONType, default=dict, nullable=False)
    # Refresh bookkeeping: when to look again, who holds it now, what went wrong last.
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    consecutive_errors: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    etag: Mapped[str | None] = mapped_column(String(256))  # conditional requests (GitHub)
    # Denormalised pointers into `builds`, so a status read is one indexed query: the newest
    # build, and the first completed one among the newest ten (the LifeMonitor rule). Plain
    # columns, not foreign keys: builds reference instances, and the refresh sets both in
    # one transaction.
    latest_build_id: Mapped[int | None] = mapped_column(BigId)
    last_completed_build_id: Mapped[int | None] = mapped_column(BigId)
    # The last completed build the transition detector has seen (services/transitions.py):
    # builds completed after it are compared with it, in order.
    transition_build_id: Mapped[int | None] = mapped_column(BigId)
    # Staleness: days without a completed build before the instance is STALE (NULL: the
    # default, 30), and since when it is (NULL: not stale).
    stale_after_days: Mapped[int | None] = mapped_column(Integer)
    stale_since: Mapped[datetime | None] = mapped_column(UTCDateTime)

    suite: Mapped[TestSuite] = relationship(back_populates="instances")
    testing_service: Mapped[TestingService] = relationship()


class Build(Timestamped, Base):
    """One CI build or run attempt, kept for good (LifeMonitor only cached ten)."""

    __tablename__ = "builds"
    __table_args__ = (UniqueConstraint("instance_id", "build_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    instance_id: Mapped[int] = mapped_column(
        ForeignKey("test_instances.id", ondelete="CASCADE"), nullable=False
    )
    build_id: Mapped[str] = mapped_column(String(128), nullable=False)  # CI's id, as a string
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # BUILD_STATUSES
    # UTC instants; the API shows them as epoch seconds (legacy) and ISO-8601.
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration: Mapped[float | None] = mapped_column(Float)  # seconds, for every CI
    url: Mapped[str | None] = mapped_column(Text)  # the build's page on the CI
    revision: Mapped[str | None] = mapped_column(String(128))
    links: Mapped[dict] = mapped_column(JSONType, default=dict, nullable=False)

    instance: Mapped[TestInstance] = relationship()

    @property
    def completed(self) -> bool:
        return self.status in COMPLETED_STATUSES


# An instance's newest builds, in the order every reader asks for them (the refresh's
# pointers, `latest-builds`, history): an index scan, never a sort of the whole history.
# (Migration 0002; on SQLite plain DESC, which puts NULLs last there.)
Index(
    "ix_builds_instance_recent",
    Build.instance_id,
    Build.started_at.desc().nulls_last(),
    Build.id.desc(),
)
