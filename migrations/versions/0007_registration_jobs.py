"""registration jobs: `async: true` workflow POSTs, run by the refresh worker and polled at
`GET /jobs/status/<job_id>`

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "registration_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("principal", JSON, nullable=False),
        sa.Column("route", sa.String(length=32), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("body", JSON, nullable=False),
        sa.Column("request_url", sa.String(length=2048), nullable=True),
        sa.Column("crate_location", sa.String(length=512), nullable=True),
        sa.Column("authorization_key", sa.String(length=255), nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("error", JSON, nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registration_jobs")),
        sa.UniqueConstraint("uuid", name=op.f("uq_registration_jobs_uuid")),
    )


def downgrade() -> None:
    op.drop_table("registration_jobs")
