"""`archive` and `read_file` on a real SQLite audit log: records past the online retention go to a signed
file, the database keeps the tree's compact range, and `verify` continues from it.

The log: records 1-30 written 300 days ago (checkpoints at 10 and 30), 31-50 100 days ago (checkpoint at
50), 51-55 today (checkpoint at 55), each batch by an `AuditLog` whose clock says so.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from gateway.audit import archive as aarchive
from gateway.audit import merkle
from gateway.audit import verify as averify
from gateway.audit.archive import ArchiveError, read_file
from gateway.audit.checkpoint import CheckpointSigner
from gateway.audit.events import AuditEvent
from gateway.audit.log import AUDIT_HEAD, AUDIT_MIGRATIONS, AuditLog, iso, split_frontier
from gateway.store.db import Database, _upgrade

NODE = "node-a.ch-test.mssante.fr"
NOW = datetime.now(UTC)
BATCHES = ((300, 30, (10, 30)), (100, 20, (50,)), (0, 5, (55,)))  # (days ago, records, checkpoint sizes)
CUTOFF = iso(NOW - timedelta(days=183))
APPEND_ONLY = "audit records are append-only"


async def build(path: Path, signer: CheckpointSigner) -> Database:
    db = Database(f"sqlite+aiosqlite:///{path}", AUDIT_MIGRATIONS, AUDIT_HEAD)
    await db.migrate()
    n = 0
    for days, count, checkpoints in BATCHES:
        log = AuditLog(db, NODE, signer, clock=lambda days=days: NOW - timedelta(days=days))
        for _ in range(count):
            n += 1
            await log.record(
                AuditEvent.MAILBOX_CREATED,
                author="operator:admin@ops",
                principal=f"dr.{n}@ch-test.mssante.fr",
                peer="192.0.2.10",
                request={"n": n, "address": f"dr.{n}@ch-test.mssante.fr", "note": "\u00e9t\u00e9 \udc80"},
                response={"result": "done"},
            )
            if n in checkpoints:
                assert await log.checkpoint() is not None
    return db


@pytest.fixture
def signer(tmp_path: Path) -> CheckpointSigner:
    return CheckpointSigner.generate(tmp_path / "keys" / "checkpoint.pem")


@pytest.fixture
async def db(tmp_path: Path, signer: CheckpointSigner) -> Any:
    database = await build(tmp_path / "audit.db", signer)
    yield database
    await database.close()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    d = tmp_path / "archives"
    d.mkdir()
    return d


def seqs(path: Path) -> list[int]:
    with sqlite3.connect(path) as con:
        return [r[0] for r in con.execute("SELECT seq FROM audit_records ORDER BY seq")]


def lines(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="ascii") as f:
        return [json.loads(line) for line in f]


def rewrite(path: Path, items: list[dict[str, Any]]) -> None:
    with gzip.open(path, "wt", encoding="ascii") as f:
        f.writelines(json.dumps(item, separators=(",", ":")) + "\n" for item in items)


async def test_old_records_go_to_a_signed_file_and_the_tree_goes_on(
    db: Database, signer: CheckpointSigner, out: Path, tmp_path: Path
) -> None:
    before = await averify.verify(db, [signer.verifier])
    assert (before.ok, before.records) == (True, 55)
    done = await aarchive.archive(db, signer, NODE, CUTOFF, out)
    assert done.archive is not None
    assert done.path is not None
    assert (done.archive.first_seq, done.archive.last_seq, done.records, done.removed) == (1, 30, 30, 30)
    assert done.path == out / "audit-000000000001-000000000030.jsonl.gz"
    assert done.path.stat().st_mode & 0o777 == 0o600
    assert done.archive.sha256 == hashlib.sha256(done.path.read_bytes()).hexdigest()
    assert done.archive.last_ts == iso(NOW - timedelta(days=300))
    assert seqs(tmp_path / "audit.db") == list(range(31, 56))
    # The database keeps the tree: the same root as before, over 30 archived and 25 online records.
    after = await averify.verify(db, [signer.verifier])
    assert (after.ok, after.findings) == (True, [])
    assert (after.records, after.archived, after.archives, after.root_hash) == (25, 30, 1, before.root_hash)
    assert (after.checkpoints_archived, after.checkpoints_verified) == (1, 3)  # 10 archived; 30, 50, 55 checked
    # The file verifies on its own, and holds the records as they were hashed (surrogate escapes included).
    got = read_file(done.path, {signer.key_id: signer.verifier})
    assert (got.first_seq, got.last_seq, got.frontier_before, got.sha256) == (1, 30, [], done.archive.sha256)
    assert got.checkpoint.root_hash == done.archive.checkpoint.root_hash
    items = lines(done.path)
    assert items[0] == {"format": "mssgw-audit-archive/1", "node": NODE, "first_seq": 1, "last_seq": 30,
                        "frontier_before": []}  # fmt: skip
    assert [i["seq"] for i in items[1:-1]] == list(range(1, 31))
    assert "\\udc80" in items[5]["request"]  # the stored text, a JSON escape in it
    assert json.loads(items[5]["request"])["note"] == "\u00e9t\u00e9 \udc80"
    assert set(items[-1]) == {"checkpoint", "frontier_after"}
    # The log goes on: a new record, and a second archive continues from the first.
    await AuditLog(db, NODE, signer).record(AuditEvent.NODE_STARTED, author="node:a")
    second = await aarchive.archive(db, signer, NODE, iso(NOW - timedelta(days=50)), out)
    assert second.archive is not None
    assert second.path is not None
    assert (second.archive.first_seq, second.archive.last_seq, second.removed) == (31, 50, 20)
    assert read_file(second.path, {signer.key_id: signer.verifier}).frontier_before == done.archive.frontier
    final = await averify.verify(db, [signer.verifier])
    assert (final.ok, final.records, final.archived, final.archives) == (True, 6, 50, 2)
    # Nothing older is left: a third run archives nothing and says so.
    again = await aarchive.archive(db, signer, NODE, CUTOFF, out)
    assert (again.archive, again.path, again.removed) == (None, None, 0)
    with pytest.raises(ValueError, match="records 1 to 50 are archived: a proof needs their files"):
        await averify.inclusion_proof(db, 52, 56)


async def test_the_database_lets_only_archived_records_go(
    db: Database, signer: CheckpointSigner, tmp_path: Path
) -> None:
    path = tmp_path / "audit.db"
    with sqlite3.connect(path) as con, pytest.raises(sqlite3.IntegrityError, match=APPEND_ONLY):
        con.execute("DELETE FROM audit_records WHERE seq = 1")
    await aarchive.archive(db, signer, NODE, CUTOFF, tmp_path)
    with sqlite3.connect(path) as con:
        with pytest.raises(sqlite3.IntegrityError, match=APPEND_ONLY):
            con.execute("DELETE FROM audit_records WHERE seq = 31")  # the first record still online
        with pytest.raises(sqlite3.IntegrityError, match=APPEND_ONLY):
            con.execute("UPDATE audit_records SET action = 'x' WHERE seq = 31")


async def test_an_interrupted_archive_is_named_by_verify_and_finished_by_the_next(
    db: Database, signer: CheckpointSigner, out: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def stopped(db: Database, upto: int) -> int:  # the process ends after the row was committed
        return 0

    monkeypatch.setattr(aarchive, "_remove", stopped)
    done = await aarchive.archive(db, signer, NODE, CUTOFF, out)
    assert (done.records, done.removed) == (30, 0)
    report = await averify.verify(db, [signer.verifier])
    assert report.findings == [
        averify.Finding(
            "archived_online",
            "records 1 to 30 are archived but still in the database (30 records): an interrupted mssgw audit "
            "archive (run it again), or inserted",
            seq=1,
        )
    ]
    monkeypatch.undo()
    again = await aarchive.archive(db, signer, NODE, CUTOFF, out)
    assert (again.archive, again.removed) == (None, 30)
    assert seqs(tmp_path / "audit.db") == list(range(31, 56))
    assert (await averify.verify(db, [signer.verifier])).ok


async def test_a_forged_or_altered_archive_row_is_found(
    db: Database, signer: CheckpointSigner, out: Path, tmp_path: Path
) -> None:
    await aarchive.archive(db, signer, NODE, CUTOFF, out)
    path = tmp_path / "audit.db"
    with sqlite3.connect(path) as con:  # an attacker moves the base: one node of the range replaced
        (frontier,) = con.execute("SELECT frontier FROM audit_archives").fetchone()
        con.execute("UPDATE audit_archives SET frontier = ?", (bytes(32) + frontier[32:],))
    report = await averify.verify(db, [signer.verifier])
    kinds = [(f.kind, f.message.split(": ")[-1]) for f in report.findings]
    assert ("archive", "its compact range does not give its signed root") in kinds
    assert [f.kind for f in report.findings].count("checkpoint_mismatch") == 3  # at 30, 50 and 55
    with sqlite3.connect(path) as con:  # a row the key never signed, with the true range after record 50
        con.execute("UPDATE audit_archives SET frontier = ?", (frontier,))
        tree = merkle.CompactRange(30, split_frontier(frontier))
        for (leaf,) in con.execute("SELECT leaf_hash FROM audit_records WHERE seq <= 50 ORDER BY seq"):
            tree.append(leaf)
        con.execute(
            "INSERT INTO audit_archives SELECT 31, 50, last_ts, ?, ?, ts, node, key_id, zeroblob(64), 'forged', "
            "sha256 FROM audit_archives",
            (b"".join(tree.nodes), tree.root()),
        )
        con.execute("DELETE FROM audit_records WHERE seq <= 50")  # the trigger now allows it
    report = await averify.verify(db, [signer.verifier])
    assert [f.message for f in report.findings] == ["the archive of records 31 to 50 (forged) has an invalid signature"]


async def test_a_tampered_file_is_refused_with_the_reason(
    db: Database, signer: CheckpointSigner, out: Path, tmp_path: Path
) -> None:
    done = await aarchive.archive(db, signer, NODE, CUTOFF, out)
    assert done.path is not None
    keys = {signer.key_id: signer.verifier}
    items = lines(done.path)
    copy = tmp_path / "copy.jsonl.gz"

    def refused(changed: list[dict[str, Any]]) -> str:
        rewrite(copy, changed)
        with pytest.raises(ArchiveError) as info:
            read_file(copy, keys)
        return str(info.value)

    edited = [dict(i) for i in items]
    edited[5]["author"] = "operator:someone-else@ops"
    assert refused(edited) == "copy.jsonl.gz: record 5 (admin.mailbox.created, " + items[5]["ts"] + ") was altered"
    # A forger who also rewrites the leaf: the signed root does not follow.
    leaf = aarchive._record_leaf(edited[5])
    edited[5]["leaf_hash"] = leaf.hex()
    assert refused(edited) == "copy.jsonl.gz: its records do not give the signed root over 30 records"
    assert refused(items[:-1]) == "copy.jsonl.gz: truncated: no checkpoint after record 30"
    assert refused(items[:4] + items[5:]) == "copy.jsonl.gz: line 5 holds record 5, not 4"
    other = CheckpointSigner.generate(tmp_path / "other.pem")
    with pytest.raises(ArchiveError, match=f"signed by unknown key {signer.key_id}"):
        read_file(done.path, {other.key_id: other.verifier})
    copy.write_bytes(done.path.read_bytes()[:-40])
    with pytest.raises(ArchiveError, match=r"copy\.jsonl\.gz: unreadable"):
        read_file(copy, keys)
    copy.write_bytes(b"not gzip")
    with pytest.raises(ArchiveError, match=r"copy\.jsonl\.gz: unreadable"):
        read_file(copy, keys)


async def test_one_archive_at_a_time_writes_to_a_directory(db: Database, signer: CheckpointSigner, out: Path) -> None:
    """Two archives at once in one directory would write one file name: the second is refused, writing nothing."""
    fd = os.open(out / aarchive.LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ArchiveError, match=f"another mssgw audit archive is writing to {out}"):
            await aarchive.archive(db, signer, NODE, CUTOFF, out)
    finally:
        os.close(fd)
    assert [p.name for p in out.iterdir()] == [aarchive.LOCK_FILE]  # noqa: ASYNC240
    assert (await aarchive.archive(db, signer, NODE, CUTOFF, out)).records == 30


async def test_another_directory_loses_the_race_and_keeps_nothing(
    db: Database, signer: CheckpointSigner, out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two nodes archiving to their own directories: the one that commits second records nothing and
    removes its file; the first one's archive stands."""
    other = tmp_path / "other"
    other.mkdir()
    real_last, real_remove = aarchive._last_before, aarchive._remove

    async def kept(database: Database, upto: int) -> int:  # the first node has not deleted yet
        return 0

    async def meanwhile(database: Database, before: str) -> tuple[int, str]:
        monkeypatch.setattr(aarchive, "_last_before", real_last)
        monkeypatch.setattr(aarchive, "_remove", kept)
        first = await aarchive.archive(database, signer, NODE, CUTOFF, out)  # the other node, committing first
        assert first.records == 30
        monkeypatch.setattr(aarchive, "_remove", real_remove)
        return await real_last(database, before)

    monkeypatch.setattr(aarchive, "_last_before", meanwhile)
    with pytest.raises(ArchiveError, match="another mssgw audit archive ran meanwhile: this one recorded nothing"):
        await aarchive.archive(db, signer, NODE, CUTOFF, other)
    assert [p.name for p in other.iterdir()] == [aarchive.LOCK_FILE]
    names = sorted(p.name for p in out.iterdir())  # noqa: ASYNC240
    assert names == [aarchive.LOCK_FILE, "audit-000000000001-000000000030.jsonl.gz"]
    assert [r.file for r in await aarchive.archives(db)] == ["audit-000000000001-000000000030.jsonl.gz"]


def _downgrade(connection: Connection, revision: str) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(AUDIT_MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


async def test_migration_a0002_on_a_log_made_under_a0001(tmp_path: Path, signer: CheckpointSigner) -> None:
    """An existing log keeps verifying; the delete trigger allows only archived records, and downgrading
    puts the old trigger (no delete at all) back."""
    path = tmp_path / "old.db"
    async with Database(f"sqlite+aiosqlite:///{path}", AUDIT_MIGRATIONS, "a0001") as db:
        async with db.engine.begin() as conn:
            await conn.run_sync(_upgrade, AUDIT_MIGRATIONS, "a0001")
        log = AuditLog(db, NODE, signer, clock=lambda: NOW - timedelta(days=200))
        for n in range(3):
            await log.record(AuditEvent.MAILBOX_CREATED, author="operator:admin@ops", request={"n": n})
        await log.checkpoint()
    async with Database(f"sqlite+aiosqlite:///{path}", AUDIT_MIGRATIONS, AUDIT_HEAD) as db:
        await db.migrate()
        assert (await averify.verify(db, [signer.verifier])).ok
        with sqlite3.connect(path) as con, pytest.raises(sqlite3.IntegrityError, match=APPEND_ONLY):
            con.execute("DELETE FROM audit_records WHERE seq = 1")
        assert (await aarchive.archive(db, signer, NODE, CUTOFF, tmp_path)).records == 3
        async with db.engine.begin() as conn:
            await conn.execute(text("DELETE FROM audit_archives"))  # an archive undone, for the downgrade
            await conn.run_sync(_downgrade, "a0001")
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'audit_archives'").fetchone() == (0,)
        con.execute(
            "INSERT INTO audit_records VALUES (4, 't', 'n', 'a', 'x', NULL, NULL, NULL, '{}', '{}', zeroblob(32))"
        )
        with pytest.raises(sqlite3.IntegrityError, match=APPEND_ONLY):
            con.execute("DELETE FROM audit_records WHERE seq = 4")
