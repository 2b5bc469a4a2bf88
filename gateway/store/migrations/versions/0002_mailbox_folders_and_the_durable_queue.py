"""Mailbox folders (IMAP model: UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) and the durable queue.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 13:08:58.296867
"""

import time
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A snapshot of gateway.store.folders.STANDARD_FOLDERS when this migration was written.
STANDARD_FOLDERS = [
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
]


def upgrade() -> None:
    op.create_table(
        "queue_messages",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("principal", sa.String(length=320), nullable=True),
        sa.Column("peer", sa.String(length=320), nullable=True),
        sa.Column("header_message_id", sa.String(length=998), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_messages")),
    )
    op.create_table(
        "queue_recipients",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("local", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["queue_messages.id"],
            name=op.f("fk_queue_recipients_message_id_queue_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_recipients")),
    )
    with op.batch_alter_table("queue_recipients", schema=None) as batch_op:
        batch_op.create_index("ix_queue_recipients_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_queue_recipients_message_id"), ["message_id"], unique=False)

    op.create_table(
        "folders",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("special_use", sa.String(length=16), nullable=True),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uidnext", sa.BigInteger(), nullable=False),
        sa.Column("highestmodseq", sa.BigInteger(), nullable=False),
        sa.Column("subscribed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["address"], ["accounts.address"], name=op.f("fk_folders_address_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_folders")),
        sa.UniqueConstraint("address", "name", name="uq_folders_address_name"),
    )
    with op.batch_alter_table("folders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_folders_address"), ["address"], unique=False)

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("folder_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("uid", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("modseq", sa.BigInteger(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("flags", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("internal_date", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("header_message_id", sa.String(length=998), nullable=True))
        batch_op.create_unique_constraint("uq_messages_folder_uid", ["folder_id", "uid"])
        batch_op.create_foreign_key(
            batch_op.f("fk_messages_folder_id_folders"), "folders", ["folder_id"], ["id"], ondelete="CASCADE"
        )

    # Every existing account gets the standard folders (RFC 6154 special-use); its messages go to INBOX.
    bind = op.get_bind()
    uidvalidity = int(time.time())
    for (address,) in bind.execute(sa.text("SELECT address FROM accounts")).all():
        for name, use in STANDARD_FOLDERS:
            bind.execute(
                sa.text(
                    "INSERT INTO folders (address, name, special_use, uidvalidity, uidnext, highestmodseq, subscribed) "
                    "VALUES (:a, :n, :u, :v, 1, 1, :s)"
                ),
                {"a": address, "n": name, "u": use, "v": uidvalidity, "s": True},
            )
        inbox = bind.execute(
            sa.text("SELECT id FROM folders WHERE address = :a AND name = 'INBOX'"), {"a": address}
        ).scalar_one()
        ids = bind.execute(
            sa.text("SELECT id FROM messages WHERE address = :a ORDER BY created_at, id"), {"a": address}
        ).scalars()
        uid = 0
        for uid, message in enumerate(list(ids), 1):
            bind.execute(
                sa.text("UPDATE messages SET folder_id = :f, uid = :u, modseq = :u WHERE id = :m"),
                {"f": inbox, "u": uid, "m": message},
            )
        bind.execute(
            sa.text("UPDATE folders SET uidnext = :n, highestmodseq = :h WHERE id = :f"),
            {"n": uid + 1, "h": max(uid, 1), "f": inbox},
        )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_messages_folder_id_folders"), type_="foreignkey")
        batch_op.drop_constraint("uq_messages_folder_uid", type_="unique")
        batch_op.drop_column("header_message_id")
        batch_op.drop_column("internal_date")
        batch_op.drop_column("flags")
        batch_op.drop_column("modseq")
        batch_op.drop_column("uid")
        batch_op.drop_column("folder_id")

    with op.batch_alter_table("folders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_folders_address"))

    op.drop_table("folders")
    with op.batch_alter_table("queue_recipients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_queue_recipients_message_id"))
        batch_op.drop_index("ix_queue_recipients_due")

    op.drop_table("queue_recipients")
    op.drop_table("queue_messages")
