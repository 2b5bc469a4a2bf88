"""S/MIME: a mailbox may keep the original S/MIME form of what peers send it (end-to-end clients).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD/DROP COLUMN, not batch mode: SQLite's table copy would cascade-delete rows (see 0004).
    op.add_column("mailboxes", sa.Column("keep_smime", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("mailboxes", "keep_smime")
