"""Messages relayed to peers are tracked until their sender has had its one final delivery notice; a
queued message from a peer says whether its sender asked for the dispatched MDN.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-24 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notice_tracking",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("queue_id", sa.String(length=32), nullable=False),
        sa.Column("final_delivery", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notice_tracking"),
        sa.UniqueConstraint("sender", "message_id", "recipient", name="uq_notice_tracking_message"),
    )
    op.create_index("ix_notice_tracking_due", "notice_tracking", ["state", "deadline"], unique=False)
    op.create_index("ix_notice_tracking_created_at", "notice_tracking", ["created_at"], unique=False)
    # Plain ADD/DROP COLUMN, not batch mode: SQLite's table copy would cascade-delete rows (see 0004).
    op.add_column("queue_messages", sa.Column("final_notice", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    op.drop_column("queue_messages", "final_notice")
    op.drop_index("ix_notice_tracking_created_at", table_name="notice_tracking")
    op.drop_index("ix_notice_tracking_due", table_name="notice_tracking")
    op.drop_table("notice_tracking")
