"""Migration 0004 on a database made under 0003: subscriptions leave the folders for a table of their own, and
come back on downgrade. Messages stay (batch mode on SQLite would have dropped them through the cascade)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, DateTime, TextClause, bindparam, inspect, text

from gateway.store.crypto import DataKey, KeyEncryptionKey
from gateway.store.db import STORE_HEAD, Database, _upgrade

JAN1 = datetime(2026, 1, 1, tzinfo=UTC)
A = "a@x.fr"
B = "b@x.fr"
# (address, name, subscribed)
FOLDERS = [
    (A, "INBOX", True),
    (A, "Archive", False),
    (A, "Patients", False),
    (A, "Patients/Dupont", True),
    (B, "INBOX", True),
    (B, "Archive", True),
]


def sql(statement: str) -> TextClause:
    """A textual statement whose :t parameter is a timestamp, bound the way each dialect wants."""
    return text(statement).bindparams(bindparam("t", type_=DateTime(timezone=True)))


def _downgrade(connection: Connection, migrations: Path, revision: str) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations))
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


def _columns(connection: Connection, table: str) -> set[str]:
    return {c["name"] for c in inspect(connection).get_columns(table)}


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_subscriptions_move_to_their_table_and_back(db_url: str, kek: KeyEncryptionKey) -> None:
    async with Database(db_url, head="0003") as db:
        async with db.engine.begin() as conn:
            await conn.run_sync(_upgrade, db.migrations, "0003")
        async with db.engine.begin() as conn:
            for address in (A, B):
                await conn.execute(
                    sql(
                        "INSERT INTO mailboxes (address, kind, list_rouge, active, origin, service, "
                        "dematerialisation, search_text, created_at, updated_at) VALUES "
                        "(:a, 'ORG', false, true, 'local', '', '', '', :t, :t)"
                    ),
                    {"a": address, "t": JAN1},
                )
                await conn.execute(
                    sql("INSERT INTO accounts (address, data_key, kek_id, created_at) VALUES (:a, :k, :i, :t)"),
                    {"a": address, "k": kek.wrap(DataKey.generate(), address), "i": kek.key_id, "t": JAN1},
                )
            for address, name, subscribed in FOLDERS:
                await conn.execute(
                    text(
                        "INSERT INTO folders (address, name, uidvalidity, uidnext, highestmodseq, subscribed) "
                        "VALUES (:a, :n, 1, 2, 2, :s)"
                    ),
                    {"a": address, "n": name, "s": subscribed},
                )
            inbox = (
                await conn.execute(text("SELECT id FROM folders WHERE address = :a AND name = 'INBOX'"), {"a": A})
            ).scalar_one()
            await conn.execute(
                sql(
                    "INSERT INTO messages (id, address, folder_id, uid, modseq, flags, size, body, created_at) "
                    "VALUES ('m1', :a, :f, 1, 2, '', 1, :b, :t)"
                ),
                {"a": A, "f": inbox, "b": b"x", "t": JAN1},
            )

    async with Database(db_url) as db:
        await db.migrate()
        assert await db.current_revision() == STORE_HEAD  # 0004 and every later one
        async with db.engine.connect() as conn:
            subscriptions = (await conn.execute(text("SELECT address, name FROM subscriptions"))).all()
            assert "subscribed" not in await conn.run_sync(_columns, "folders")
            messages = (await conn.execute(text("SELECT id, folder_id, uid FROM messages"))).all()
        assert sorted(tuple(r) for r in subscriptions) == [
            (A, "INBOX"),
            (A, "Patients/Dupont"),
            (B, "Archive"),
            (B, "INBOX"),
        ]
        assert [tuple(m) for m in messages] == [("m1", inbox, 1)]

        async with db.engine.begin() as conn:  # a name whose folder was deleted stays subscribed
            await conn.execute(text("DELETE FROM folders WHERE address = :a AND name = 'Patients/Dupont'"), {"a": A})
            await conn.execute(text("INSERT INTO subscriptions (address, name) VALUES (:a, 'Archive')"), {"a": A})
        await db.run_migration(_downgrade, db.migrations, "0003")
        assert await db.current_revision() == "0003"
        async with db.engine.connect() as conn:
            assert "subscriptions" not in await conn.run_sync(_tables)
            folders = (await conn.execute(text("SELECT address, name, subscribed FROM folders"))).all()
            messages = (await conn.execute(text("SELECT id, folder_id, uid FROM messages"))).all()
        assert sorted((r[0], r[1], bool(r[2])) for r in folders) == [
            (A, "Archive", True),
            (A, "INBOX", True),
            (A, "Patients", False),  # Patients/Dupont had no folder left: nowhere to keep it
            (B, "Archive", True),
            (B, "INBOX", True),
        ]
        assert [tuple(m) for m in messages] == [("m1", inbox, 1)]

        await db.migrate()  # and up again
        async with db.engine.connect() as conn:
            subscriptions = (await conn.execute(text("SELECT address, name FROM subscriptions"))).all()
        assert sorted(tuple(r) for r in subscriptions) == [(A, "Archive"), (A, "INBOX"), (B, "Archive"), (B, "INBOX")]
