"""Lock-out counters survive restarts: the failures and the known client addresses of each account.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-23 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("account", sa.String(length=320), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.Double(), nullable=False),
        sa.Column("last_failure", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "account", "ip", name="pk_login_failures"),
    )
    op.create_index("ix_login_failures_last_failure", "login_failures", ["last_failure"], unique=False)
    op.create_table(
        "login_known",
        sa.Column("account", sa.String(length=320), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("seen", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("account", "ip", name="pk_login_known"),
    )
    op.create_index("ix_login_known_seen", "login_known", ["seen"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_login_known_seen", table_name="login_known")
    op.drop_table("login_known")
    op.drop_index("ix_login_failures_last_failure", table_name="login_failures")
    op.drop_table("login_failures")
