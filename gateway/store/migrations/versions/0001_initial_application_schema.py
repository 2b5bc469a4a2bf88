"""Initial application schema: directory, accounts, sealed messages, trust list.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 11:24:11.887625
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "professionals",
        sa.Column("key", sa.String(length=330), nullable=False),
        sa.Column("id_nat_ps", sa.String(length=32), nullable=True),
        sa.Column("id_type", sa.String(length=2), nullable=False),
        sa.Column("id_pp", sa.String(length=32), nullable=False),
        sa.Column("civility", sa.String(length=32), nullable=False),
        sa.Column("last_name", sa.String(length=200), nullable=False),
        sa.Column("first_name", sa.String(length=200), nullable=False),
        sa.Column("category_code", sa.String(length=16), nullable=False),
        sa.Column("category_label", sa.String(length=200), nullable=False),
        sa.Column("profession_code", sa.String(length=16), nullable=False),
        sa.Column("profession_label", sa.String(length=200), nullable=False),
        sa.Column("skill_code", sa.String(length=16), nullable=False),
        sa.Column("skill_label", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_professionals")),
        sa.UniqueConstraint("id_nat_ps", name=op.f("uq_professionals_id_nat_ps")),
    )
    op.create_table(
        "structures",
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("id_type", sa.String(length=2), nullable=False),
        sa.Column("identification", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("trade_name", sa.String(length=300), nullable=False),
        sa.Column("location_complement", sa.String(length=300), nullable=False),
        sa.Column("distribution_complement", sa.String(length=300), nullable=False),
        sa.Column("street_number", sa.String(length=32), nullable=False),
        sa.Column("street_number_complement", sa.String(length=32), nullable=False),
        sa.Column("street_type", sa.String(length=64), nullable=False),
        sa.Column("street_name", sa.String(length=300), nullable=False),
        sa.Column("locality", sa.String(length=300), nullable=False),
        sa.Column("routing_line", sa.String(length=300), nullable=False),
        sa.Column("postal_code", sa.String(length=16), nullable=False),
        sa.Column("department", sa.String(length=64), nullable=False),
        sa.Column("country", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_structures")),
    )
    op.create_table(
        "trust_domains",
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("domain", name=op.f("pk_trust_domains")),
    )
    op.create_table(
        "mailboxes",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=3), nullable=False),
        sa.Column("professional_key", sa.String(length=330), nullable=True),
        sa.Column("structure_key", sa.String(length=80), nullable=True),
        sa.Column("service", sa.String(length=300), nullable=False),
        sa.Column("dematerialisation", sa.String(length=16), nullable=False),
        sa.Column("list_rouge", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=True),
        sa.Column("row_hash", sa.LargeBinary(length=16), nullable=True),
        sa.Column("import_id", sa.String(length=40), nullable=True),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["professional_key"],
            ["professionals.key"],
            name=op.f("fk_mailboxes_professional_key_professionals"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["structure_key"],
            ["structures.key"],
            name=op.f("fk_mailboxes_structure_key_structures"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_mailboxes")),
    )
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.create_index("ix_mailboxes_origin_ordinal", ["origin", "ordinal"], unique=False)
        batch_op.create_index(batch_op.f("ix_mailboxes_professional_key"), ["professional_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_mailboxes_structure_key"), ["structure_key"], unique=False)

    op.create_table(
        "accounts",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("totp_secret", sa.LargeBinary(), nullable=True),
        sa.Column("data_key", sa.LargeBinary(), nullable=False),
        sa.Column("kek_id", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["address"], ["mailboxes.address"], name=op.f("fk_accounts_address_mailboxes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_accounts")),
    )
    op.create_table(
        "mailbox_certificates",
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("usage", sa.String(length=8), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["address"],
            ["mailboxes.address"],
            name=op.f("fk_mailbox_certificates_address_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("fingerprint", name=op.f("pk_mailbox_certificates")),
    )
    with op.batch_alter_table("mailbox_certificates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mailbox_certificates_address"), ["address"], unique=False)

    op.create_table(
        "mailbox_delegations",
        sa.Column("mailbox", sa.String(length=320), nullable=False),
        sa.Column("user", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox"],
            ["mailboxes.address"],
            name=op.f("fk_mailbox_delegations_mailbox_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user"],
            ["mailboxes.address"],
            name=op.f("fk_mailbox_delegations_user_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("mailbox", "user", name=op.f("pk_mailbox_delegations")),
    )
    with op.batch_alter_table("mailbox_delegations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mailbox_delegations_user"), ["user"], unique=False)

    op.create_table(
        "messages",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["address"], ["accounts.address"], name=op.f("fk_messages_address_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_messages_address"), ["address"], unique=False)

    # A mailbox's address and type never change (the directory's rule), whatever code runs.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TRIGGER mailboxes_immutable BEFORE UPDATE OF address, kind ON mailboxes "
            "WHEN NEW.address <> OLD.address OR NEW.kind <> OLD.kind "
            "BEGIN SELECT RAISE(ABORT, 'mailbox address and type are immutable'); END"
        )
    else:
        op.execute(
            "CREATE FUNCTION mailboxes_immutable() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.address <> OLD.address OR NEW.kind <> OLD.kind THEN "
            "RAISE EXCEPTION 'mailbox address and type are immutable'; END IF; RETURN NEW; END $$"
        )
        op.execute(
            "CREATE TRIGGER mailboxes_immutable BEFORE UPDATE ON mailboxes "
            "FOR EACH ROW EXECUTE FUNCTION mailboxes_immutable()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER mailboxes_immutable")
    else:
        op.execute("DROP TRIGGER mailboxes_immutable ON mailboxes")
        op.execute("DROP FUNCTION mailboxes_immutable()")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_address"))

    op.drop_table("messages")
    with op.batch_alter_table("mailbox_delegations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailbox_delegations_user"))

    op.drop_table("mailbox_delegations")
    with op.batch_alter_table("mailbox_certificates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailbox_certificates_address"))

    op.drop_table("mailbox_certificates")
    op.drop_table("accounts")
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailboxes_structure_key"))
        batch_op.drop_index(batch_op.f("ix_mailboxes_professional_key"))
        batch_op.drop_index("ix_mailboxes_origin_ordinal")

    op.drop_table("mailboxes")
    op.drop_table("trust_domains")
    op.drop_table("structures")
    op.drop_table("professionals")
