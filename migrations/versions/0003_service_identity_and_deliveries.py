"""testing services identified by type and URL; GitHub delivery ids kept for a day

* `testing_services`: the unique key becomes (type, url) instead of url alone, so a crate
  naming a URL with another type gets a service of its own instead of changing (or being
  refused by) the one other users' instances rely on (issue 9, defect 2).
* `received_webhook_deliveries`: ids of the signed deliveries acted on (GitHub's
  `X-GitHub-Delivery`), so a replay is ignored whichever container receives it; rows older
  than a day are deleted as new ones arrive (issue 9, defect 8).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("testing_services", schema=None) as batch_op:
        batch_op.drop_constraint("uq_testing_services_url", type_="unique")
        batch_op.create_unique_constraint("uq_testing_services_type_url", ["type", "url"])
    op.create_table(
        "received_webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("delivery_id", sa.String(length=128), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_received_webhook_deliveries")),
        sa.UniqueConstraint(
            "provider",
            "delivery_id",
            name=op.f("uq_received_webhook_deliveries_provider_delivery_id"),
        ),
    )
    op.create_index(
        "ix_received_webhook_deliveries_received_at",
        "received_webhook_deliveries",
        ["received_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_received_webhook_deliveries_received_at", table_name="received_webhook_deliveries"
    )
    op.drop_table("received_webhook_deliveries")
    # Back to one service per URL: keep the oldest of each URL and point every instance
    # at it (the types of the others are lost, as the old schema cannot hold them).
    op.execute(
        """
        UPDATE test_instances SET testing_service_id = (
            SELECT MIN(keep.id) FROM testing_services AS keep
            JOIN testing_services AS mine ON mine.url = keep.url
            WHERE mine.id = test_instances.testing_service_id
        )
        """
    )
    op.execute(
        """
        DELETE FROM testing_services WHERE id NOT IN (
            SELECT MIN(id) FROM testing_services GROUP BY url
        )
        """
    )
    with op.batch_alter_table("testing_services", schema=None) as batch_op:
        batch_op.drop_constraint("uq_testing_services_type_url", type_="unique")
        batch_op.create_unique_constraint("uq_testing_services_url", ["url"])
