"""TOTP codes are single-use across nodes: the time step of the last accepted code, per account.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD/DROP COLUMN, not batch mode: SQLite's table copy would cascade-delete rows (see 0004).
    op.add_column("accounts", sa.Column("totp_last_step", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("accounts", "totp_last_step")
