"""Migration 0002 on a database made under 0001: accounts get their folders, messages their UIDs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, TextClause, bindparam, text

from gateway.store.crypto import DataKey, KeyEncryptionKey
from gateway.store.db import STORE_HEAD, Database, _upgrade
from gateway.store.folders import STANDARD_FOLDERS

JAN1 = datetime(2026, 1, 1, tzinfo=UTC)


def sql(statement: str) -> TextClause:
    """A textual statement whose :t parameter is a timestamp, bound the way each dialect wants."""
    return text(statement).bindparams(bindparam("t", type_=DateTime(timezone=True)))


async def test_upgrade_from_0001_keeps_messages_and_gives_them_uids(db_url: str, kek: KeyEncryptionKey) -> None:
    async with Database(db_url, head="0001") as db:
        async with db.engine.begin() as conn:
            await conn.run_sync(_upgrade, db.migrations, "0001")
        async with db.engine.begin() as conn:
            await conn.execute(
                sql(
                    "INSERT INTO mailboxes (address, kind, list_rouge, active, origin, service, "
                    "dematerialisation, search_text, created_at, updated_at) VALUES "
                    "('a@x.fr', 'ORG', false, true, 'local', '', '', '', :t, :t)"
                ),
                {"t": JAN1},
            )
            await conn.execute(
                sql("INSERT INTO accounts (address, data_key, kek_id, created_at) VALUES ('a@x.fr', :k, :i, :t)"),
                {"k": kek.wrap(DataKey.generate(), "a@x.fr"), "i": kek.key_id, "t": JAN1},
            )
            for n, when in enumerate([JAN1 + timedelta(days=1), JAN1]):
                await conn.execute(
                    sql("INSERT INTO messages (id, address, size, body, created_at) VALUES (:i, 'a@x.fr', 1, :b, :t)"),
                    {"i": f"m{n}", "b": b"x", "t": when},
                )
    async with Database(db_url) as db:
        await db.migrate()
        assert await db.current_revision() == STORE_HEAD
        async with db.engine.connect() as conn:
            folders = (
                await conn.execute(
                    text(
                        "SELECT name, special_use, uidnext, highestmodseq FROM folders "
                        "WHERE address = 'a@x.fr' ORDER BY id"
                    )
                )
            ).all()
            messages = (
                await conn.execute(
                    text(
                        "SELECT m.id, f.name, m.uid, m.modseq, m.flags FROM messages m "
                        "JOIN folders f ON f.id = m.folder_id ORDER BY m.uid"
                    )
                )
            ).all()
    assert [(f[0], f[1]) for f in folders] == STANDARD_FOLDERS
    assert (folders[0][2], folders[0][3]) == (3, 2)  # INBOX: UIDs 1 and 2 taken
    assert [tuple(m) for m in messages] == [("m1", "INBOX", 1, 1, ""), ("m0", "INBOX", 2, 2, "")]  # oldest first
