"""S/MIME: the private key (sealed) and the chain of a mailbox certificate the node signs with.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD/DROP COLUMN, not batch mode: SQLite's table copy would cascade-delete rows (see 0004).
    op.add_column("mailbox_certificates", sa.Column("sealed_key", sa.LargeBinary(), nullable=True))
    op.add_column("mailbox_certificates", sa.Column("chain", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("mailbox_certificates", "chain")
    op.drop_column("mailbox_certificates", "sealed_key")
