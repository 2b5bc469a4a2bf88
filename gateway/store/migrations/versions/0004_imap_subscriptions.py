"""IMAP: subscriptions in a table of their own, so that a name stays subscribed after its folder is deleted.

RFC 3501 §6.3.6: "The server MUST NOT unilaterally remove an existing mailbox name from the subscription
list even if a mailbox by that name no longer exists." A flag on the folder row went with the folder.

No batch mode for `folders` here: on SQLite it copies the table and drops the old one, and with foreign keys
on (they are, and the PRAGMA cannot change inside the migration's transaction) that DROP TABLE deletes every
message through `messages.folder_id ON DELETE CASCADE`. SQLite's own ALTER TABLE ... DROP COLUMN (3.35+) and
ADD COLUMN leave the rows where they are; PostgreSQL does the same.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 10:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FOLDERS = sa.table(
    "folders",
    sa.column("address", sa.String()),
    sa.column("name", sa.String()),
    sa.column("subscribed", sa.Boolean()),
)
_SUBSCRIPTIONS = sa.table("subscriptions", sa.column("address", sa.String()), sa.column("name", sa.String()))


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["address"], ["accounts.address"], name=op.f("fk_subscriptions_address_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("address", "name", name=op.f("pk_subscriptions")),
    )
    op.execute(
        _SUBSCRIPTIONS.insert().from_select(
            ["address", "name"],
            sa.select(_FOLDERS.c.address, _FOLDERS.c.name).where(_FOLDERS.c.subscribed == sa.true()),
        )
    )
    op.drop_column("folders", "subscribed")


def downgrade() -> None:
    # Back on the folders: a subscribed name without a folder has nowhere to go and is lost. The server default
    # stays (removing it would take batch mode on SQLite, see above); the models set the value anyway.
    op.add_column("folders", sa.Column("subscribed", sa.Boolean(), nullable=False, server_default=sa.false()))
    held = sa.exists().where(_SUBSCRIPTIONS.c.address == _FOLDERS.c.address, _SUBSCRIPTIONS.c.name == _FOLDERS.c.name)
    op.execute(_FOLDERS.update().where(held).values(subscribed=True))
    op.drop_table("subscriptions")
