"""Folder ids are never reused on SQLite: `AUTOINCREMENT`. Without it SQLite gives a new row the highest id
plus one, so a folder created right after the newest one was deleted took its id, and an IMAP session that
still had the deleted folder selected could go on in the new one. PostgreSQL's sequence never reuses an id:
nothing to do there.

SQLite cannot add AUTOINCREMENT to a table: the table is rebuilt (SQLite's "12-step" procedure). Dropping
the old table with foreign keys on would cascade-delete every message, so `Database.migrate()` runs the
migrations with foreign keys off and checks them (`PRAGMA foreign_key_check`) before it commits; this
migration refuses to run otherwise.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COPY = (
    "INSERT INTO folders_new (id, address, name, special_use, uidvalidity, uidnext, highestmodseq, recent_uid) "
    "SELECT id, address, name, special_use, uidvalidity, uidnext, highestmodseq, recent_uid FROM folders"
)


def _table(autoincrement: bool) -> str:
    primary_key = (
        "id INTEGER NOT NULL CONSTRAINT pk_folders PRIMARY KEY AUTOINCREMENT"
        if autoincrement
        else "id INTEGER NOT NULL"
    )
    return (
        "CREATE TABLE folders_new ("
        f"{primary_key}, "
        "address VARCHAR(320) NOT NULL, "
        "name VARCHAR(255) NOT NULL, "
        "special_use VARCHAR(16), "
        "uidvalidity BIGINT NOT NULL, "
        "uidnext BIGINT NOT NULL, "
        "highestmodseq BIGINT NOT NULL, "
        "recent_uid BIGINT DEFAULT '0' NOT NULL, "
        + ("" if autoincrement else "CONSTRAINT pk_folders PRIMARY KEY (id), ")
        + "CONSTRAINT fk_folders_address_accounts FOREIGN KEY(address) REFERENCES accounts (address) "
        "ON DELETE CASCADE, "
        "CONSTRAINT uq_folders_address_name UNIQUE (address, name))"
    )


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    if op.get_bind().exec_driver_sql("PRAGMA foreign_keys").scalar():
        # DROP TABLE folders would delete every message through ON DELETE CASCADE.
        raise RuntimeError("migration 0010 rebuilds `folders`: run it through Database.migrate()")
    op.execute(_table(autoincrement))
    op.execute(_COPY)
    op.execute("DROP TABLE folders")
    op.execute("ALTER TABLE folders_new RENAME TO folders")
    op.execute("CREATE INDEX ix_folders_address ON folders (address)")


def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)
