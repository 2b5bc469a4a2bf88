"""Audit archives: records moved off line to a file under a signed checkpoint (`mssgw audit archive`).

The append-only trigger now lets a record be deleted once an `audit_archives` row covers it, and only
then; UPDATE and TRUNCATE stay refused. On PostgreSQL the node role keeps no DELETE right: archives are
made as the audit owner. Grant (as `postgres`, see deploy/postgresql.md):
`GRANT SELECT ON audit_archives TO mssgw_audit;`

Revision ID: a0002
Revises: a0001
Create Date: 2026-11-24 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a0002"
down_revision: str | None = "a0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ARCHIVED = "(SELECT COALESCE(MAX(last_seq), 0) FROM audit_archives)"


def upgrade() -> None:
    op.create_table(
        "audit_archives",
        sa.Column("first_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_ts", sa.String(length=40), nullable=False),
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("ts", sa.String(length=40), nullable=False),
        sa.Column("node", sa.String(length=100), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("signature", sa.LargeBinary(length=64), nullable=False),
        sa.Column("file", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("first_seq", name=op.f("pk_audit_archives")),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER audit_records_no_delete")
        op.execute(
            f"CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records WHEN OLD.seq > {_ARCHIVED} "
            "BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END"
        )
    else:
        op.execute(
            "CREATE OR REPLACE FUNCTION audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            # Nested: OLD exists only for the row trigger (the TRUNCATE one is per statement).
            f"IF TG_OP = 'DELETE' THEN IF OLD.seq <= {_ARCHIVED} THEN RETURN OLD; END IF; END IF; "
            "RAISE EXCEPTION 'audit records are append-only'; END $$"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER audit_records_no_delete")
        op.execute(
            "CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records "
            "BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END"
        )
    else:
        op.execute(
            "CREATE OR REPLACE FUNCTION audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'audit records are append-only'; END $$"
        )
    op.drop_table("audit_archives")
