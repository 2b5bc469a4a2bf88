"""A mailbox's used bytes, kept by triggers: a delivery's quota check reads one row instead of summing the
sizes of every message in the mailbox (a scan growing with the mailbox, at every delivery and APPEND).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE = (
    "CREATE TRIGGER messages_usage_insert AFTER INSERT ON messages BEGIN "
    "UPDATE accounts SET used_bytes = used_bytes + NEW.size WHERE address = NEW.address; END",
    "CREATE TRIGGER messages_usage_delete AFTER DELETE ON messages BEGIN "
    "UPDATE accounts SET used_bytes = used_bytes - OLD.size WHERE address = OLD.address; END",
    "CREATE TRIGGER messages_usage_update AFTER UPDATE OF size, address ON messages BEGIN "
    "UPDATE accounts SET used_bytes = used_bytes - OLD.size WHERE address = OLD.address; "
    "UPDATE accounts SET used_bytes = used_bytes + NEW.size WHERE address = NEW.address; END",
)
_POSTGRESQL = (
    "CREATE FUNCTION messages_usage() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF TG_OP IN ('DELETE', 'UPDATE') THEN "
    "UPDATE accounts SET used_bytes = used_bytes - OLD.size WHERE address = OLD.address; END IF; "
    "IF TG_OP IN ('INSERT', 'UPDATE') THEN "
    "UPDATE accounts SET used_bytes = used_bytes + NEW.size WHERE address = NEW.address; END IF; "
    "RETURN NULL; END $$",
    "CREATE TRIGGER messages_usage AFTER INSERT OR DELETE OR UPDATE OF size, address ON messages "
    "FOR EACH ROW EXECUTE FUNCTION messages_usage()",
)


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: SQLite's table copy would cascade-delete rows (see 0004).
    op.add_column("accounts", sa.Column("used_bytes", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE accounts SET used_bytes = "
        "(SELECT coalesce(sum(size), 0) FROM messages WHERE messages.address = accounts.address)"
    )
    for sql in _SQLITE if op.get_bind().dialect.name == "sqlite" else _POSTGRESQL:
        op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("messages_usage_insert", "messages_usage_delete", "messages_usage_update"):
            op.execute(f"DROP TRIGGER {name}")
    else:
        op.execute("DROP TRIGGER messages_usage ON messages")
        op.execute("DROP FUNCTION messages_usage()")
    op.drop_column("accounts", "used_bytes")
