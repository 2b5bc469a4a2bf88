"""Database: migrations, SQLite settings, the triggers that guard invariants, concurrent writers."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from gateway.audit.events import AuditEvent
from gateway.audit.log import AUDIT_HEAD, AUDIT_MIGRATIONS, AuditLog
from gateway.audit.models import AuditHead, AuditRecord
from gateway.audit.verify import verify
from gateway.errors import ConfigError
from gateway.store import db as db_module
from gateway.store.db import STORE_HEAD, STORE_MIGRATIONS, Database, alembic_head
from gateway.store.models import Mailbox, TrustDomain
from tests.pg import db_error
from tests.store.commits import slow_commits
from tests.store.conftest import LoopTicks

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
STORE_TABLES = {
    "accounts",
    "alembic_version",
    "conversations",
    "folders",
    "mailbox_certificates",
    "mailbox_delegations",
    "mailboxes",
    "notice_tracking",
    "messages",
    "patients",
    "professionals",
    "queue_messages",
    "queue_recipients",
    "login_failures",
    "login_known",
    "relay_receipts",
    "structures",
    "subscriptions",
    "web_sessions",
    "trust_domains",
}


async def _tables(db: Database) -> set[str]:
    if db.is_sqlite:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    else:
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    async with db.read() as s:
        return set((await s.execute(text(sql))).scalars())


def test_head_constants_are_alembic_heads() -> None:
    assert alembic_head(STORE_MIGRATIONS) == STORE_HEAD == "0014"
    assert alembic_head(AUDIT_MIGRATIONS) == AUDIT_HEAD == "a0002"


async def test_migrations_reach_heads(db_url: str, make_db_url: Callable[[str], str]) -> None:
    async with Database(db_url) as db:
        assert await db.current_revision() is None
        await db.migrate()
        assert await db.current_revision() == STORE_HEAD
        assert await _tables(db) == STORE_TABLES
    async with Database(make_db_url("audit"), AUDIT_MIGRATIONS, AUDIT_HEAD) as audit:
        assert await audit.current_revision() is None
        await audit.migrate()
        assert await audit.current_revision() == AUDIT_HEAD
        assert await _tables(audit) == {
            "alembic_version",
            "audit_archives",
            "audit_checkpoints",
            "audit_head",
            "audit_records",
        }
        async with audit.read() as s:
            head = (await s.execute(select(AuditHead))).scalars().all()
            assert [(h.id, h.size, h.frontier) for h in head] == [(1, 0, b"")]


async def test_migrate_twice_is_a_noop(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with Database(db_url) as db:
        await db.migrate()
        async with db.write() as s:
            s.add(TrustDomain(domain="peer.mssante.fr", source="manual", added_at=T0))

    calls: list[str] = []
    monkeypatch.setattr(db_module, "_upgrade", lambda *args: calls.append("upgrade"))
    async with Database(db_url) as db:  # a second process opening the same database
        await db.migrate()
        await db.migrate()
        assert calls == []
        assert await db.current_revision() == STORE_HEAD
        async with db.read() as s:
            assert (await s.execute(select(TrustDomain.domain))).scalars().all() == ["peer.mssante.fr"]
            assert (await s.execute(text("SELECT count(*) FROM alembic_version"))).scalar_one() == 1


async def test_migrate_upgrades_when_behind(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The no-op check above can fail: a database not at head does run the upgrade."""
    calls: list[str] = []
    monkeypatch.setattr(db_module, "_upgrade", lambda conn, migrations, rev: calls.append(f"{migrations.name}:{rev}"))
    async with Database(db_url) as db:
        await db.migrate()
    assert calls == ["migrations:head"]


def test_unsupported_url_is_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        Database("mysql+aiomysql://u@localhost/db")
    assert str(exc.value) == "unsupported database 'mysql': use SQLite or PostgreSQL"


async def test_sqlite_pragmas_on_both_engines(tmp_path: Path) -> None:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as db:
        assert db.read_engine is not db.engine
        for engine in (db.engine, db.read_engine):
            async with engine.connect() as conn:
                got = [
                    (await conn.exec_driver_sql(f"PRAGMA {p}")).scalar_one()
                    for p in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
                ]
            # Busy timeout 0: the inline driver waits for other processes' locks itself, off the loop.
            assert got == ["wal", 2, 1, 0]
            assert engine.dialect.driver == "mssgw"


async def _add_mailbox(db: Database, address: str, kind: str) -> None:
    async with db.write() as s:
        s.add(Mailbox(address=address, kind=kind, search_text=address, created_at=T0, updated_at=T0))


async def test_mailbox_address_and_type_are_immutable(db_url: str) -> None:
    async with Database(db_url) as db:
        await db.migrate()
        await _add_mailbox(db, "a@ch-test.mssante.fr", "PER")
        for sql in (
            "UPDATE mailboxes SET address = 'b@ch-test.mssante.fr'",
            "UPDATE mailboxes SET kind = 'ORG'",
            "UPDATE mailboxes SET kind = 'APP', service = 'x'",
        ):
            with pytest.raises(DBAPIError) as exc:
                async with db.write() as s:
                    await s.execute(text(sql))
            assert db_error(exc.value) == "mailbox address and type are immutable", sql
        # Other columns change freely, and rewriting the same address/type is not a change.
        async with db.write() as s:
            await s.execute(text("UPDATE mailboxes SET service = 'Cardiologie', kind = 'PER'"))
        async with db.read() as s:
            rows = (await s.execute(select(Mailbox.address, Mailbox.kind, Mailbox.service))).all()
        assert [tuple(r) for r in rows] == [("a@ch-test.mssante.fr", "PER", "Cardiologie")]


async def test_audit_records_are_append_only(db_url: str, make_db_url: Callable[[str], str]) -> None:
    async with Database(make_db_url("audit"), AUDIT_MIGRATIONS, AUDIT_HEAD) as db:
        await db.migrate()
        log = AuditLog(db, "node-t", None)
        assert await log.record(AuditEvent.NODE_STARTED, author="tester@ci") == 1
        refused = ["UPDATE audit_records SET author = 'forger'", "DELETE FROM audit_records"]
        if not db.is_sqlite:
            refused.append("TRUNCATE audit_records")
        for sql in refused:
            with pytest.raises(DBAPIError) as exc:
                async with db.write() as s:
                    await s.execute(text(sql))
            assert db_error(exc.value) == "audit records are append-only", sql
        # Appending still works, and nothing was changed by the refused statements.
        assert await log.record(AuditEvent.NODE_STOPPED, author="tester@ci") == 2
        async with db.read() as s:
            rows = (await s.execute(select(AuditRecord.seq, AuditRecord.author, AuditRecord.action))).all()
            size = (await s.execute(select(AuditHead.size))).scalar_one()
        assert sorted(tuple(r) for r in rows) == [(1, "tester@ci", "node.started"), (2, "tester@ci", "node.stopped")]
        assert size == 2


async def test_an_unstorable_value_does_not_fail_the_other_records_of_its_group(
    db_url: str, make_db_url: Callable[[str], str]
) -> None:
    """A lone surrogate (a client's undecodable octets) or NUL (refused by PostgreSQL's text) in one record:
    it is stored escaped, and the records committed with it in one group are stored too (all failed)."""
    async with Database(make_db_url("audit"), AUDIT_MIGRATIONS, AUDIT_HEAD) as db:
        await db.migrate()
        log = AuditLog(db, "node-t", None)
        seqs = await asyncio.gather(
            log.record(AuditEvent.NODE_STARTED, author="tester@ci"),
            log.record(AuditEvent.SMTP_AUTH_FAILED, author="smtp", principal="dr\udcff@ch-test.mssante.fr"),
            log.record(AuditEvent.SMTP_AUTH_FAILED, author="smtp", peer="a\x00b", request={"user": "x\udcfey"}),
            log.record(AuditEvent.NODE_STOPPED, author="tester@ci"),
        )
        assert seqs == [1, 2, 3, 4]
        async with db.read() as s:
            rows = (
                await s.execute(
                    select(AuditRecord.seq, AuditRecord.principal, AuditRecord.peer, AuditRecord.request).order_by(
                        AuditRecord.seq
                    )
                )
            ).all()
        assert [tuple(r) for r in rows] == [
            (1, None, None, "{}"),
            (2, "dr\\udcff@ch-test.mssante.fr", None, "{}"),
            (3, None, "a\\x00b", '{"user":"x\\udcfey"}'),
            (4, None, None, "{}"),
        ]
        report = await verify(db, [])
        assert (report.records, report.findings) == (4, [])


async def test_two_databases_write_the_same_sqlite_file(tmp_path: Path) -> None:
    """Two processes' worth of writers: read-modify-write transactions interleave without "database is locked"."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    rounds = 100
    async with Database(url) as first, Database(url) as second:
        await first.migrate()
        await second.migrate()
        await _add_mailbox(first, "counter@ch-test.mssante.fr", "ORG")

        async def writer(db: Database, name: str) -> None:
            for i in range(rounds):
                async with db.write() as s:
                    mb = await s.get(Mailbox, "counter@ch-test.mssante.fr")
                    assert mb is not None
                    seen = mb.ordinal or 0
                    await asyncio.sleep(0)  # let the other writer run while this one holds its snapshot
                    mb.ordinal = seen + 1
                    s.add(TrustDomain(domain=f"{name}-{i}.mssante.fr", source="manual", added_at=T0))

        await asyncio.wait_for(asyncio.gather(writer(first, "a"), writer(second, "b")), timeout=60)
        async with first.read() as s:
            counter = (await s.execute(select(Mailbox.ordinal))).scalar_one()
            domains = (await s.execute(select(func.count()).select_from(TrustDomain))).scalar_one()
        assert (counter, domains) == (2 * rounds, 2 * rounds)


async def test_sqlite_reads_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    async with Database(url) as writer_db, Database(url) as reader_db:
        await writer_db.migrate()
        async with writer_db.write() as s:
            s.add(TrustDomain(domain="pending.mssante.fr", source="manual", added_at=T0))
            await s.flush()  # the write lock is held, the row not committed

            async def read() -> list[str]:
                async with reader_db.read() as r:
                    return list((await r.execute(select(TrustDomain.domain))).scalars())

            assert await asyncio.wait_for(read(), timeout=5) == []
        assert await read() == ["pending.mssante.fr"]


async def test_sqlite_writers_of_one_process_take_turns_without_the_busy_handler(tmp_path: Path) -> None:
    """Twenty writers of one node contend for SQLite's write lock. They must queue in-process, never in
    SQLite's busy handler (which sleeps up to 100 ms a round): with the busy timeout at 0, one writer
    meeting another's lock would fail at once with "database is locked"."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    async with Database(url) as db:
        await db.migrate()
        await _add_mailbox(db, "counter@ch-test.mssante.fr", "ORG")
        await db.engine.dispose()  # new connections get the pragma below

        @event.listens_for(db.engine.sync_engine, "connect")
        def no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA busy_timeout=0")

        async def writer() -> None:
            for _ in range(10):
                async with db.write() as s:
                    mb = await s.get(Mailbox, "counter@ch-test.mssante.fr")
                    assert mb is not None
                    await asyncio.sleep(0)  # let the other writers try while this one holds the lock
                    mb.ordinal = (mb.ordinal or 0) + 1

        await asyncio.wait_for(asyncio.gather(*(writer() for _ in range(20))), timeout=60)
        async with db.read() as s:
            assert (await s.execute(select(Mailbox.ordinal))).scalar_one() == 200


async def test_a_write_inside_a_write_of_the_same_task_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    async with Database(url) as db:
        await db.migrate()
        async with db.write():
            with pytest.raises(RuntimeError, match="already open in this task: pass its session instead"):
                async with db.write():
                    pass
        async with db.write() as s:  # the refusal left nothing held
            s.add(TrustDomain(domain="after.mssante.fr", source="manual", added_at=T0))


async def test_the_models_match_the_migrated_schema(db_url: str) -> None:
    """What alembic autogenerate would write for the models against the migrated database: nothing."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from gateway.store.models import Base

    async with Database(db_url) as db:
        await db.migrate()
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata))
    assert diff == []


async def test_older_code_refuses_a_database_a_newer_version_migrated(db_url: str) -> None:
    """One node upgraded first (docs/operations.md): the other, still old, must stop with one line."""
    async with Database(db_url) as db:
        await db.migrate()
        async with db.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
        with pytest.raises(ConfigError) as exc:
            await db.migrate()
    assert str(exc.value) == (
        f"the database schema is at revision 0099, newer than this version of mssgw knows (its latest is "
        f"{STORE_HEAD}): upgrade mssgw on this node (docs/operations.md, upgrades)"
    )


async def test_0009_counts_the_messages_already_stored(db_url: str) -> None:
    """Upgrading to 0009 sums each mailbox's stored messages into used_bytes; its downgrade removes the lot."""
    import secrets as _secrets

    from gateway.store.crypto import KeyEncryptionKey
    from gateway.store.mailboxes import MailboxRepository
    from gateway.store.messages import MessageStore

    async with Database(db_url) as db:
        await db.migrate()
        repo = MailboxRepository(db, KeyEncryptionKey(_secrets.token_bytes(32)))
        store = MessageStore(repo)
        for address, bodies in (("a@ch-test.mssante.fr", [b"x" * 100, b"y" * 250]), ("b@ch-test.mssante.fr", [])):
            await repo.create(address, "PER")
            for b in bodies:
                await store.deliver(address, b)
        await db.run_migration(_alembic_downgrade, "0008")
        assert await db.current_revision() == "0008"
        async with db.read() as s:
            columns = await s.execute(text("SELECT * FROM accounts"))
            assert "used_bytes" not in list(columns.keys())
        await db.migrate()
        async with db.read() as s:
            got = (await s.execute(text("SELECT address, used_bytes FROM accounts ORDER BY address"))).all()
        assert [tuple(r) for r in got] == [("a@ch-test.mssante.fr", 350), ("b@ch-test.mssante.fr", 0)]
        await store.deliver("b@ch-test.mssante.fr", b"z" * 7)  # and the triggers are back
        async with db.read() as s:
            got = (await s.execute(text("SELECT used_bytes FROM accounts ORDER BY address"))).scalars().all()
        assert got == [350, 7]


def _alembic_downgrade(connection: Any, revision: str) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(STORE_MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


async def test_0010_rebuilds_folders_keeping_every_message(db_url: str) -> None:
    """0010 rebuilds `folders` on SQLite (AUTOINCREMENT): ids and messages stay, through the upgrade and the
    downgrade; afterwards a deleted folder's id is not given again. Run with foreign keys on, the rebuild
    would cascade-delete every message: it refuses to run."""
    import secrets as _secrets

    from gateway.store.crypto import KeyEncryptionKey
    from gateway.store.mailboxes import MailboxRepository
    from gateway.store.mailstore import Mailstore
    from gateway.store.messages import MessageStore

    address = "a@ch-test.mssante.fr"
    async with Database(db_url) as db:
        await db.migrate()
        repo = MailboxRepository(db, KeyEncryptionKey(_secrets.token_bytes(32)))
        await repo.create(address, "PER")
        box = Mailstore(MessageStore(repo))
        for name in ("INBOX", "Sent"):
            await box.append(address, name, f"Subject: {name}\r\n\r\nx\r\n".encode())
        newest = await box.create_folder(address, "Projets")
        await box.append(address, "Projets", b"Subject: p\r\n\r\nx\r\n")

        async def snapshot() -> list[tuple[Any, ...]]:
            sql = "SELECT f.id, f.name, m.uid FROM folders f JOIN messages m ON m.folder_id = f.id ORDER BY f.id"
            async with db.read() as s:
                return [tuple(r) for r in (await s.execute(text(sql))).all()]

        before = await snapshot()
        assert [(name, uid) for _, name, uid in before] == [("INBOX", 1), ("Sent", 1), ("Projets", 1)]
        await db.run_migration(_alembic_downgrade, "0009")
        assert await db.current_revision() == "0009"
        assert await snapshot() == before
        if db.is_sqlite:
            async with db.engine.begin() as conn:  # foreign keys on: refused, nothing touched
                with pytest.raises(RuntimeError, match="migration 0010 rebuilds `folders`"):
                    await conn.run_sync(db_module._upgrade, db.migrations, "head")
            assert await db.current_revision() == "0009"
            assert await snapshot() == before
        await db.migrate()
        assert await db.current_revision() == STORE_HEAD
        assert await snapshot() == before
        await box.delete_folder(address, "Projets")  # the newest folder, and its message
        assert (await box.create_folder(address, "Autre")).id > newest.id
        assert await snapshot() == before[:2]
        async with db.write() as s:  # foreign keys are back on for the pool's connection
            with pytest.raises(IntegrityError):
                await s.execute(text("INSERT INTO subscriptions (address, name) VALUES ('nobody@x.fr', 'INBOX')"))


# -- rows(): the hot one-statement reads -------------------------------------------------------------


async def _two_domains(db: Database) -> None:
    await db.migrate()
    async with db.write() as s:
        s.add(TrustDomain(domain="a.mssante.fr", source="manual", added_at=T0))
        s.add(TrustDomain(domain="b.mssante.fr", source="annuaire", added_at=T0))


async def test_rows_reads_one_statement_on_both_backends(db_url: str) -> None:
    """The same SQL text answers alike on both; on SQLite it runs on the raw connection, not the engine."""
    async with Database(db_url) as db:
        await _two_domains(db)
        through_engine: list[str] = []
        event.listen(db.read_engine.sync_engine, "before_cursor_execute", lambda *a: through_engine.append(a[2]))
        sql = "SELECT domain, source FROM trust_domains WHERE domain IN (:x, :y) ORDER BY domain"
        assert await db.rows(sql, {"x": "b.mssante.fr", "y": "a.mssante.fr"}) == [
            ("a.mssante.fr", "manual"),
            ("b.mssante.fr", "annuaire"),
        ]
        assert await db.rows(sql, {"x": "c.mssante.fr", "y": "d.mssante.fr"}) == []
        if db.is_sqlite:
            assert through_engine == []  # no pool checkout, BEGIN or COMMIT
        else:
            assert len(through_engine) == 2  # PostgreSQL: the engine's read transaction


async def test_rows_waits_for_an_exclusive_lock_off_the_loop(tmp_path: Path) -> None:
    """A statement meeting another process's lock (SQLITE_BUSY, which a WAL reader meets under an exclusive
    locking mode) is not retried on the loop: it goes through the engine, which waits on a worker thread."""

    path = tmp_path / "store.db"
    url = f"sqlite+aiosqlite:///{path}"
    async with Database(url) as db:
        await _two_domains(db)
    other = sqlite3.connect(path, isolation_level=None)
    sql: str = "SELECT count(*) FROM trust_domains"
    try:
        other.execute("PRAGMA locking_mode=EXCLUSIVE")  # taken while no other connection is open
        other.execute("BEGIN EXCLUSIVE")
        other.execute("INSERT INTO trust_domains (domain, source, added_at) VALUES ('c.mssante.fr', 'manual', '')")
        async with Database(url) as db:
            async with LoopTicks() as ticks:
                reader = asyncio.create_task(db.rows(sql, {}))
                await asyncio.sleep(0.5)
                assert not reader.done()
                other.execute("COMMIT")
                other.execute("PRAGMA locking_mode=NORMAL")
                other.execute("SELECT 1 FROM trust_domains").fetchall()  # NORMAL takes effect at the next access
                other.close()
                assert await asyncio.wait_for(reader, 5) == [(3,)]
            assert ticks.count >= 25  # the loop kept turning while the read waited
            assert await db.rows(sql, {}) == [(3,)]  # and the raw connection serves again
            assert db._raw is not None
    finally:
        other.close()


async def test_rows_refuses_to_write_on_sqlite(tmp_path: Path) -> None:

    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as db:
        await _two_domains(db)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await db.rows("DELETE FROM trust_domains", {})
        assert await db.rows("SELECT count(*) FROM trust_domains", {}) == [(2,)]


# -- raw_writing(): the hot write transactions ---------------------------------------------------------

_ADD = "INSERT INTO scratch (k, v) VALUES (:k, :v)"
_ONE = "SELECT v FROM scratch WHERE k = 'a'"


async def _scratch(db: Database) -> None:
    """A table of two text columns: the same values bind alike on both backends."""
    await db.migrate()
    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE scratch (k VARCHAR(20) PRIMARY KEY, v VARCHAR(20) NOT NULL)"))
        await conn.execute(text(_ADD), [{"k": "a", "v": "manual"}, {"k": "b", "v": "annuaire"}])


async def test_raw_writing_commits_rolls_back_and_bypasses_the_engine_on_sqlite(db_url: str) -> None:
    """One mapping runs once and returns its rows, a list runs for each; an error rolls the whole
    transaction back; on SQLite no statement goes through the engine (no pool, BEGIN event, greenlets)."""
    async with Database(db_url) as db:
        await _scratch(db)
        through_engine: list[str] = []
        event.listen(db.engine.sync_engine, "before_cursor_execute", lambda *a: through_engine.append(a[2]))
        async with db.raw_writing() as tx:
            await tx.execute(_ADD, [{"k": "c", "v": "manual"}, {"k": "d", "v": "manual"}])
            assert await tx.execute("SELECT count(*) FROM scratch", {}) == [(4,)]
            assert await tx.execute("UPDATE scratch SET v = 'x' WHERE k = :k", {"k": "c"}) == []

        async def fails_midway(second: dict[str, str] | None) -> None:
            async with db.raw_writing() as tx:
                await tx.execute(_ADD, {"k": "e", "v": "manual"})
                if second is None:
                    raise ZeroDivisionError
                await tx.execute(_ADD, second)

        with pytest.raises(ZeroDivisionError):
            await fails_midway(None)
        with pytest.raises(IntegrityError):  # SQLAlchemy's, on both backends (a raw sqlite3 one is wrapped)
            await fails_midway({"k": "c", "v": "manual"})  # the primary key again
        assert await db.rows("SELECT k, v FROM scratch ORDER BY k", {}) == [
            ("a", "manual"),
            ("b", "annuaire"),
            ("c", "x"),
            ("d", "manual"),
        ]
        async with db.raw_writing() as tx:  # FOR UPDATE where the backend has it
            assert tx.for_update == ("" if db.is_sqlite else " FOR UPDATE")
            assert await tx.execute(_ONE + tx.for_update, {}) == [("manual",)]
        if db.is_sqlite:
            assert through_engine == []
        else:
            assert len(through_engine) == 8  # seven in raw_writing(), one in rows(): one engine on PostgreSQL


async def test_raw_writing_keeps_foreign_keys_on(tmp_path: Path) -> None:

    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as db:
        await db.migrate()
        with pytest.raises(IntegrityError, match="FOREIGN KEY"):
            async with db.raw_writing() as tx:
                await tx.execute("INSERT INTO subscriptions (address, name) VALUES ('nobody@x.fr', 'INBOX')", {})


async def test_raw_writing_waits_for_another_process_off_the_loop(tmp_path: Path) -> None:
    """Another process (an admin command) holds the write lock: BEGIN IMMEDIATE waits on a worker thread,
    the loop keeps turning, the transaction goes on once the lock is free."""

    path = tmp_path / "store.db"
    async with Database(f"sqlite+aiosqlite:///{path}") as db:
        await _scratch(db)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute(_ADD, {"k": "c", "v": "manual"})

            async def write() -> None:
                async with db.raw_writing() as tx:
                    await tx.execute(_ADD, {"k": "d", "v": "manual"})

            async with LoopTicks() as ticks:
                writer = asyncio.create_task(write())
                await asyncio.sleep(0.5)
                assert not writer.done()
                other.execute("COMMIT")
                await asyncio.wait_for(writer, 5)
            assert ticks.count >= 25
        finally:
            other.close()
        assert await db.rows("SELECT count(*) FROM scratch", {}) == [(4,)]


async def _committing(db: Database) -> asyncio.Task[None]:
    """A task whose write (row "c") is in its COMMIT, held 0.3 s on the commit thread (_slow_commits)."""
    slow_commits(db)
    entered = asyncio.Event()

    async def write() -> None:
        async with db.raw_writing() as tx:
            await tx.execute(_ADD, {"k": "c", "v": "manual"})
            entered.set()

    writer = asyncio.create_task(write())
    await entered.wait()
    await asyncio.sleep(0)  # the commit is on its worker thread now
    return writer


async def test_raw_writing_cancelled_in_its_commit_leaves_the_connection_whole(tmp_path: Path) -> None:
    """A task cancelled while its COMMIT runs on a worker thread: the commit finishes (the record is
    durable), the cancellation is raised afterwards, and the next transaction finds a clean connection."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as db:
        await _scratch(db)
        writer = await _committing(db)
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
        async with db.raw_writing() as tx:
            await tx.execute(_ADD, {"k": "d", "v": "manual"})
        assert await db.rows("SELECT k FROM scratch ORDER BY k", {}) == [("a",), ("b",), ("c",), ("d",)]


async def test_a_writer_cancelled_again_while_it_waits_for_its_commit_still_waits(tmp_path: Path) -> None:
    """Each cancellation while the COMMIT runs only renews the wait (`_Committer.call`): the task ends once
    the commit has, with the cancellation, and nothing of the connection is touched before."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as db:
        await _scratch(db)
        writer = await _committing(db)
        for _ in range(3):
            writer.cancel()
            await asyncio.sleep(0.02)
            assert not writer.done()  # the commit (0.3 s) is still under way
        with pytest.raises(asyncio.CancelledError):
            await writer
        assert await db.rows("SELECT k FROM scratch ORDER BY k", {}) == [("a",), ("b",), ("c",)]


async def test_statements_in_a_session_flush_its_pending_objects_first(db_url: str) -> None:
    """Plain SQL in a caller's ORM session sees what the session added, as the ORM's own statements do."""
    async with Database(db_url) as db:
        await db.migrate()
        async with db.write() as s:
            s.add(TrustDomain(domain="a.mssante.fr", source="manual", added_at=T0))
            assert await db.statements(s).execute("SELECT domain FROM trust_domains", {}) == [("a.mssante.fr",)]


async def test_close_waits_for_a_commit_under_way(tmp_path: Path) -> None:
    """Closing the database (the node stopping) while a write's COMMIT runs on a worker thread: the commit
    ends first, the record is durable, and the closed connection is not the one the commit runs on."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    db = Database(url)
    await _scratch(db)
    writer = await _committing(db)
    await db.close()
    assert writer.done()  # close() waited for it
    assert not db._raw_writers  # and closed its connection afterwards (none left open)
    await writer  # committed, no "Cannot operate on a closed database"
    async with Database(url) as again:
        assert await again.rows("SELECT k FROM scratch ORDER BY k", {}) == [("a",), ("b",), ("c",)]


async def test_commits_run_in_order_on_a_thread_of_their_own_and_errors_reach_the_writer(tmp_path: Path) -> None:
    """`_Committer`: each COMMIT off the loop, on the Database's own thread (not the default executor),
    one after the other; a failing one raises in the task that awaits it; after close() a new thread."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as db:
        seen: list[tuple[str, int]] = []

        def job(n: int) -> Callable[[], None]:
            def run() -> None:
                time.sleep(0.01 * (3 - n))  # the first takes longest: order is kept anyway
                seen.append((threading.current_thread().name, n))

            return run

        await asyncio.gather(*(db._commits.run(job(n)) for n in range(3)))
        assert seen == [("commit:store.db", 0), ("commit:store.db", 1), ("commit:store.db", 2)]

        def failing() -> None:
            raise sqlite3.OperationalError("disk I/O error")

        with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
            await db._commits.run(failing)
        first = db._commits._thread
        db._commits.stop()
        await db._commits.run(job(0))  # a thread again after stop()
        assert db._commits._thread is not first
        assert first is not None
        first.join(5)
        assert not first.is_alive()


async def test_the_commit_thread_goes_with_its_database(tmp_path: Path) -> None:
    """A Database dropped without close() does not leave its commit thread waiting forever; one whose
    thread could not start does not queue commits for nobody (the next one starts it)."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await db._commits.run(lambda: None)
    thread = db._commits._thread
    assert thread is not None
    assert thread.is_alive()
    await db.engine.dispose()
    await db.read_engine.dispose()
    del db
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()

    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}") as other:
        real_start = threading.Thread.start

        def cannot(self: threading.Thread) -> None:
            raise RuntimeError("can't start new thread")

        threading.Thread.start = cannot  # type: ignore[method-assign]
        try:
            with pytest.raises(RuntimeError, match="can't start new thread"):
                other._commits.run(lambda: None)
        finally:
            threading.Thread.start = real_start  # type: ignore[method-assign]
        await asyncio.wait_for(other._commits.run(lambda: None), 5)  # not queued behind a thread that never ran


_CLOSE_RACE = """
import asyncio, sqlite3, sys, threading, time
from gateway.store.db import Database
url, path = sys.argv[1], sys.argv[2]
db = Database(url)
blocker = sqlite3.connect(path, isolation_level=None)
waiting, errors = threading.Event(), []

async def elsewhere():
    db._raw_writer()  # this loop's write connection
    waiting.set()
    async with db.raw_writing() as tx:  # BEGIN meets the blocker: waits on a worker thread, in SQLite
        await tx.execute("INSERT INTO scratch (k, v) VALUES ('y', 'other loop')", {})

def thread():
    try:
        asyncio.run(elsewhere())
    except BaseException as exc:
        errors.append(repr(exc))

async def main():
    blocker.execute("BEGIN IMMEDIATE")
    other = threading.Thread(target=thread)
    other.start()
    await asyncio.get_running_loop().run_in_executor(None, waiting.wait)
    await asyncio.sleep(0.5)  # the other loop's BEGIN is now waiting inside SQLite
    await db.close()
    blocker.execute("COMMIT")
    await asyncio.get_running_loop().run_in_executor(None, other.join)
    print(errors)

asyncio.run(main())
"""


async def test_close_leaves_another_live_loop_its_writer(tmp_path: Path) -> None:
    """Closing from one loop leaves alone the write connection of a loop running on another thread: it
    may be in a call there (here a BEGIN waiting for another process's lock), and closing a connection
    under a running call crashed the process (a subprocess here, so that a crash fails only this test)."""
    path = tmp_path / "store.db"
    url = f"sqlite+aiosqlite:///{path}"
    async with Database(url) as db:
        await _scratch(db)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLOSE_RACE,
        url,
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert (proc.returncode, out) == (0, b"[]\n"), err.decode()[-2000:]
    async with Database(url) as again:
        assert await again.rows("SELECT k FROM scratch ORDER BY k", {}) == [("a",), ("b",), ("y",)]
