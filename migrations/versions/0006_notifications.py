"""notifications: one subscription per user and resource, deduplicated notifications,
e-mail verification and retries, transition baselines and staleness on instances, outbound
webhooks and their deliveries

The old unique constraint (user_id, workflow_id, workflow_version_id) never fired: one of
the two resource columns is always NULL, and NULLs are distinct in a unique constraint.
Two partial unique indexes replace it (PostgreSQL and SQLite both have them), after the
duplicates a race may have left are removed (the oldest row is kept).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # --- subscriptions: one row per (user, workflow) and per (user, version) -------------
    op.execute(
        "DELETE FROM subscriptions WHERE id NOT IN (SELECT min(id) FROM subscriptions "
        "GROUP BY user_id, workflow_id, workflow_version_id)"
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_constraint(
            "uq_subscriptions_user_id_workflow_id_workflow_version_id", type_="unique"
        )
    op.create_index(
        "uq_subscriptions_user_workflow",
        "subscriptions",
        ["user_id", "workflow_id"],
        unique=True,
        postgresql_where=sa.text("workflow_id IS NOT NULL"),
        sqlite_where=sa.text("workflow_id IS NOT NULL"),
    )
    op.create_index(
        "uq_subscriptions_user_version",
        "subscriptions",
        ["user_id", "workflow_version_id"],
        unique=True,
        postgresql_where=sa.text("workflow_version_id IS NOT NULL"),
        sqlite_where=sa.text("workflow_version_id IS NOT NULL"),
    )

    # --- notifications: a dedup key per event, and the retention sweep's index ---------
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dedup_key", sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_notifications_dedup_key"), ["dedup_key"])
        batch_op.create_index(batch_op.f("ix_notifications_created"), ["created"], unique=False)
    with op.batch_alter_table("user_notifications", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("email_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("email_next_attempt_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_user_notifications_notification_id"), ["notification_id"], unique=False
        )

    # --- users: the address a verification code was mailed to --------------------------
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_verification_hash", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("email_verification_address", sa.String(256), nullable=True))
        batch_op.add_column(
            sa.Column("email_verification_sent_at", sa.DateTime(timezone=True), nullable=True)
        )

    # --- test instances: the transition baseline, staleness -----------------------------
    with op.batch_alter_table("test_instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("transition_build_id", BIGID, nullable=True))
        batch_op.add_column(sa.Column("stale_after_days", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("stale_since", sa.DateTime(timezone=True), nullable=True))
    # Existing instances start from what they show now: no notification for old history.
    op.execute("UPDATE test_instances SET transition_build_id = last_completed_build_id")

    # --- outbound webhooks ----------------------------------------------------------------
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("registry_id", sa.Integer(), nullable=True),
        sa.Column("workflow_id", sa.Integer(), nullable=True),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("events", JSON, nullable=False),
        sa.Column("secret_key", sa.String(length=256), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_webhook_endpoints_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["registry_id"],
            ["registries.id"],
            name=op.f("fk_webhook_endpoints_registry_id_registries"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_webhook_endpoints_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
        sa.UniqueConstraint("uuid", name=op.f("uq_webhook_endpoints_uuid")),
    )
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_endpoints_user_id"), ["user_id"])
        batch_op.create_index(batch_op.f("ix_webhook_endpoints_registry_id"), ["registry_id"])
        batch_op.create_index(batch_op.f("ix_webhook_endpoints_workflow_id"), ["workflow_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BIGID, nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("notification_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_webhook_deliveries_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("uuid", name=op.f("uq_webhook_deliveries_uuid")),
        sa.UniqueConstraint(
            "endpoint_id",
            "notification_id",
            name=op.f("uq_webhook_deliveries_endpoint_id_notification_id"),
        ),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_webhook_deliveries_due", ["state", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_webhook_deliveries_notification_id"), ["notification_id"]
        )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
    with op.batch_alter_table("test_instances", schema=None) as batch_op:
        batch_op.drop_column("stale_since")
        batch_op.drop_column("stale_after_days")
        batch_op.drop_column("transition_build_id")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("email_verification_sent_at")
        batch_op.drop_column("email_verification_address")
        batch_op.drop_column("email_verification_hash")
    with op.batch_alter_table("user_notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_notifications_notification_id"))
        batch_op.drop_column("email_next_attempt_at")
        batch_op.drop_column("email_attempts")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notifications_created"))
        batch_op.drop_constraint(batch_op.f("uq_notifications_dedup_key"), type_="unique")
        batch_op.drop_column("dedup_key")
    op.drop_index("uq_subscriptions_user_version", table_name="subscriptions")
    op.drop_index("uq_subscriptions_user_workflow", table_name="subscriptions")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            "uq_subscriptions_user_id_workflow_id_workflow_version_id",
            ["user_id", "workflow_id", "workflow_version_id"],
        )
