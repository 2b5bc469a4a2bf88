"""IMAP: the \\Recent watermark of each folder, and a storage quota per mailbox.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 15:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("folders", schema=None) as batch_op:
        # Messages with a UID above it are \Recent for the next session that selects the folder.
        batch_op.add_column(sa.Column("recent_uid", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quota_bytes", sa.BigInteger(), nullable=True))  # None: the node's default
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_folder_modseq", ["folder_id", "modseq"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_folder_modseq")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("quota_bytes")
    with op.batch_alter_table("folders", schema=None) as batch_op:
        batch_op.drop_column("recent_uid")
