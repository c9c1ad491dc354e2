"""Workflows, their versions (one Workflow Testing RO-Crate each) and who may change them."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from chalicelib.models.base import Base, JSONType, Timestamped, uuid_column
from chalicelib.models.limits import NAME_MAX, URL_MAX
from chalicelib.models.registries import Registry
from chalicelib.models.users import User
from chalicelib.status import NOT_AVAILABLE


class Workflow(Timestamped, Base):
    __tablename__ = "workflows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # For registry submissions this is the registry's own uuid (WorkflowHub `meta.uuid`).
    uuid: Mapped[str] = uuid_column()
    name: Mapped[str | None] = mapped_column(Text, info={"max_length": NAME_MAX})
    # Visibility is per workflow, as in LifeMonitor: a submission's `public` flag sets it.
    public: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # The latest version's aggregate status, stored (services/status_upkeep.py keeps it).
    status: Mapped[str] = mapped_column(
        String(16), default=NOT_AVAILABLE, server_default=NOT_AVAILABLE, nullable=False
    )

    versions: Mapped[list[WorkflowVersion]] = relationship(
        back_populates="workflow", cascade="all, delete-orphan", passive_deletes=True
    )


class WorkflowVersion(Timestamped, Base):
    __tablename__ = "workflow_versions"
    __table_args__ = (UniqueConstraint("workflow_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = uuid_column()
    workflow_id: Mapped[int] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False, index=True
    )
    version: Mapped[str] = mapped_column(String(128), nullable=False)
    name: Mapped[str | None] = mapped_column(Text, info={"max_length": NAME_MAX})
    submitter_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    # The crate: parsed metadata, where the bytes are stored, where they came from.
    crate_metadata: Mapped[dict | None] = mapped_column(JSONType)
    crate_location: Mapped[str | None] = mapped_column(Text)  # s3://bucket/key or file:relpath
    # roc_link (without its query), registry URL, or upload
    crate_origin: Mapped[str | None] = mapped_column(Text, info={"max_length": URL_MAX})
    crate_sha256: Mapped[str | None] = mapped_column(String(64))
    # Parameter-store key of the `authorization` header given with a roc_link, if any.
    crate_authorization_key: Mapped[str | None] = mapped_column(String(256))
    authors: Mapped[list] = mapped_column(JSONType, default=list, nullable=False)
    based_on: Mapped[str | None] = mapped_column(Text)  # the crate's isBasedOn
    # The aggregate status (chalicelib/status.py) stored in the transactions that change
    # its inputs (services/status_upkeep.py), so lists never fold over instances: the
    # status, its reason when not available, and the first of its latest builds.
    status: Mapped[str] = mapped_column(
        String(16), default=NOT_AVAILABLE, server_default=NOT_AVAILABLE, nullable=False
    )
    status_reason: Mapped[str | None] = mapped_column(Text)
    status_build_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite")
    )

    workflow: Mapped[Workflow] = relationship(back_populates="versions")
    submitter: Mapped[User | None] = relationship()
    registry_links: Mapped[list[RegistryWorkflowVersion]] = relationship(
        back_populates="workflow_version", cascade="all, delete-orphan", passive_deletes=True
    )


class RegistryWorkflowVersion(Timestamped, Base):
    """A version as known to a registry (its id there) — also records who submitted it."""

    __tablename__ = "registry_workflow_versions"
    __table_args__ = (UniqueConstraint("registry_id", "workflow_version_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    registry_id: Mapped[int] = mapped_column(
        ForeignKey("registries.id", ondelete="CASCADE"), nullable=False, index=True
    )
    workflow_version_id: Mapped[int] = mapped_column(
        ForeignKey("workflow_versions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    identifier: Mapped[str] = mapped_column(String(128), nullable=False)  # e.g. "20"
    uri: Mapped[str | None] = mapped_column(Text)

    workflow_registry: Mapped[Registry] = relationship()
    workflow_version: Mapped[WorkflowVersion] = relationship(back_populates="registry_links")


class Permission(Timestamped, Base):
    """A user's roles on a workflow; "owner" lets them change or delete it."""

    __tablename__ = "permissions"
    __table_args__ = (UniqueConstraint("user_id", "workflow_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    workflow_id: Mapped[int] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False, index=True
    )
    roles: Mapped[list] = mapped_column(JSONType, default=lambda: ["owner"], nullable=False)
