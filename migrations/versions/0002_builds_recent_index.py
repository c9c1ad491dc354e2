"""builds: an index in the order of "an instance's newest builds"

Every read of an instance's newest builds (the refresh's pointers, `latest-builds`, the
status rule) orders by `started_at DESC NULLS LAST, id DESC`. The first index,
(instance_id, started_at), cannot produce that order, so each read sorted all of the
instance's kept builds — linear in its history (0.5 ms an instance at 2,000 builds, 0.07 ms
with this index). SQLite puts NULLs first in ascending order, so plain DESC is the same
order there (and SQLite refuses NULLS LAST in an index).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    nulls_last = " NULLS LAST" if op.get_bind().dialect.name == "postgresql" else ""
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.drop_index("ix_builds_instance_started")
    op.create_index(
        "ix_builds_instance_recent",
        "builds",
        ["instance_id", sa.text(f"started_at DESC{nulls_last}"), sa.text("id DESC")],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_builds_instance_recent", table_name="builds")
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.create_index(
            "ix_builds_instance_started", ["instance_id", "started_at"], unique=False
        )
