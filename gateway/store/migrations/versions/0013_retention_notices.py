"""When a mailbox's owner was warned that its inactivity will have it deleted (`mssgw retention run`).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-24 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD/DROP COLUMN, not batch mode: SQLite's table copy would cascade-delete rows (see 0004).
    op.add_column("accounts", sa.Column("retention_warned_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("accounts", "retention_warned_at")
