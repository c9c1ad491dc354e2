"""OAuth2 code flow: one-use codes, refresh-token lifetime, tokens traced to their code

* `oauth2_authorization_codes.used_at`: the one exchange that may use a code sets it
  atomically (`UPDATE … WHERE used_at IS NULL`), so two concurrent exchanges of one code
  cannot both succeed, and a second presentation is recognised as a replay.
* `oauth2_tokens.refresh_expires_at`: refresh tokens expire on their own clock.
* `oauth2_tokens.code_hash`: the (hashed) code a token — and every token rotated from it —
  came from; a replayed code revokes them all (RFC 6749 §4.1.2).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("oauth2_authorization_codes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("used_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("oauth2_tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("refresh_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("code_hash", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_oauth2_tokens_code_hash"), ["code_hash"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("oauth2_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth2_tokens_code_hash"))
        batch_op.drop_column("code_hash")
        batch_op.drop_column("refresh_expires_at")
    with op.batch_alter_table("oauth2_authorization_codes", schema=None) as batch_op:
        batch_op.drop_column("used_at")
