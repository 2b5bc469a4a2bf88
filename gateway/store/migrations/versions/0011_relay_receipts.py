"""Messages relayed in from peers are delivered once: a receipt per mailbox and (sender, Message-ID,
content), and the receipt a queued relayed message's delivery will take.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "relay_receipts",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["address"], ["accounts.address"], name="fk_relay_receipts_address_accounts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("address", "digest", name="pk_relay_receipts"),
    )
    op.create_index("ix_relay_receipts_received_at", "relay_receipts", ["received_at"], unique=False)
    # Plain ADD/DROP COLUMN, not batch mode: SQLite's table copy would cascade-delete rows (see 0004).
    op.add_column("queue_messages", sa.Column("receipt", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("queue_messages", "receipt")
    op.drop_index("ix_relay_receipts_received_at", table_name="relay_receipts")
    op.drop_table("relay_receipts")
