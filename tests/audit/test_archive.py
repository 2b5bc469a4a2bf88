"""`archive` and `read_file` on a real SQLite audit log: records past the online retention go to a signed
file, the database keeps the tree's compact range, and `verify` continues from it.

The log: records 1-30 written 300 days ago (checkpoints at 10 and 30), 31-50 100 days ago (checkpoint at
50), 51-55 today (checkpoint at 55), each batch by an `AuditLog` whose clock says so.
"""

from __future__ import annotations

import asyncio
import fcntl
import gzip
import hashlib
import json
import os
import random
import sqlite3
import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from gateway.audit import archive as aarchive
from gateway.audit import merkle
from gateway.audit import verify as averify
from gateway.audit.archive import ArchiveError, ArchiveFile, read_file
from gateway.audit.checkpoint import CheckpointSigner
from gateway.audit.events import AuditEvent
from gateway.audit.log import AUDIT_HEAD, AUDIT_MIGRATIONS, AuditLog, iso, split_frontier
from gateway.store.db import Database, _upgrade
from tests.pg import PostgresCluster

NODE = "node-a.ch-test.mssante.fr"
NOW = datetime.now(UTC)
BATCHES = ((300, 30, (10, 30)), (100, 20, (50,)), (0, 5, (55,)))  # (days ago, records, checkpoint sizes)
CUTOFF = iso(NOW - timedelta(days=183))
APPEND_ONLY = "audit records are append-only"


async def build(path: Path | str, signer: CheckpointSigner) -> Database:
    """The log described above, in a SQLite file at `path` or at a database URL."""
    db = Database(path if isinstance(path, str) else f"sqlite+aiosqlite:///{path}", AUDIT_MIGRATIONS, AUDIT_HEAD)
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


def _inflates_to(data: bytes, content: bytes) -> bool:
    try:
        return gzip.decompress(data) == content
    except (EOFError, gzip.BadGzipFile, zlib.error):
        return False


def _same_records(a: ArchiveFile, b: ArchiveFile) -> bool:
    """The same range, frontiers and signature: all but the file's own name and SHA-256."""
    blank = {"file": "", "sha256": ""}
    return a.frontier_before == b.frontier_before and replace(a.archive, **blank) == replace(b.archive, **blank)


async def test_old_records_go_to_a_signed_file_and_the_tree_goes_on(
    db: Database, signer: CheckpointSigner, out: Path, tmp_path: Path
) -> None:
    before = await averify.verify(db, [signer.verifier])
    assert (before.ok, before.records) == (True, 55)
    done = await aarchive.archive(db, signer, NODE, CUTOFF, out)
    assert done.archive is not None
    assert done.path is not None
    assert (done.archive.first_seq, done.archive.last_seq, done.records, done.reused) == (1, 30, 30, False)
    assert done.archive.file == "audit-000000000001-000000000030.jsonl.gz"
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
    assert (got.archive.first_seq, got.archive.last_seq, got.frontier_before) == (1, 30, [])
    assert (got.sha256, got.archive.root_hash) == (done.archive.sha256, done.archive.root_hash)
    items = lines(done.path)
    assert items[0] == {"format": "mssgw-audit-archive/1", "node": NODE, "first_seq": 1, "last_seq": 30,
                        "frontier_before": []}  # fmt: skip
    assert [i["seq"] for i in items[1:-1]] == list(range(1, 31))
    assert "\\udc80" in items[5]["request"]  # the stored text, a JSON escape in it
    assert json.loads(items[5]["request"])["note"] == "\u00e9t\u00e9 \udc80"
    assert set(items[-1]) == {"archive", "frontier_after"}
    assert items[-1]["archive"]["last_ts"] == items[-2]["ts"]
    # The log goes on: a new record, and a second archive continues from the first.
    await AuditLog(db, NODE, signer).record(AuditEvent.NODE_STARTED, author="node:a")
    second = await aarchive.archive(db, signer, NODE, iso(NOW - timedelta(days=50)), out)
    assert second.archive is not None
    assert second.path is not None
    assert (second.archive.first_seq, second.archive.last_seq, second.records) == (31, 50, 20)
    assert read_file(second.path, {signer.key_id: signer.verifier}).frontier_before == done.archive.frontier
    final = await averify.verify(db, [signer.verifier])
    assert (final.ok, final.records, final.archived, final.archives) == (True, 6, 50, 2)
    # Nothing older is left: a third run archives nothing and says so.
    again = await aarchive.archive(db, signer, NODE, CUTOFF, out)
    assert (again.archive, again.path) == (None, None)
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


async def test_a_file_an_interrupted_run_left_is_checked_and_recorded(
    db: Database, signer: CheckpointSigner, out: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Stopped between the file's rename and the commit: no row, records online, the file left. The next
    run reads the same records, finds that file sound and of the same root, and records it as it is (a copy
    already shipped off the node stays the archived one)."""

    async def stopped(database: Database, made: aarchive.Archive, archived_to: int) -> None:
        raise SystemExit  # the process ends there

    monkeypatch.setattr(aarchive, "_record", stopped)
    with pytest.raises(SystemExit):
        await aarchive.archive(db, signer, NODE, CUTOFF, out)
    monkeypatch.undo()
    left = out / "audit-000000000001-000000000030.jsonl.gz"
    first = hashlib.sha256(left.read_bytes()).hexdigest()
    assert seqs(tmp_path / "audit.db") == list(range(1, 56))
    assert (await averify.verify(db, [signer.verifier])).ok  # no row yet: nothing to say
    done = await aarchive.archive(db, signer, NODE, CUTOFF, out)
    assert done.archive is not None
    assert (done.reused, done.path, done.archive.sha256) == (True, left, first)
    assert sorted(p.name for p in out.iterdir()) == [aarchive.LOCK_FILE, left.name]  # noqa: ASYNC240
    assert seqs(tmp_path / "audit.db") == list(range(31, 56))
    assert (await averify.verify(db, [signer.verifier])).ok


async def test_a_record_inserted_in_the_archived_range_is_reported(
    db: Database, signer: CheckpointSigner, out: Path, tmp_path: Path
) -> None:
    """An archive deletes its records in the transaction that records it: one numbered among them, online,
    was inserted (it would show in searches as a genuine record); verify says so and archive refuses."""
    await aarchive.archive(db, signer, NODE, CUTOFF, out)
    with sqlite3.connect(tmp_path / "audit.db") as con:
        con.execute(
            "INSERT INTO audit_records SELECT 5, ts, node, 'operator:framed@ops', action, principal, peer, cid, "
            "request, response, leaf_hash FROM audit_records WHERE seq = 31"
        )
    report = await averify.verify(db, [signer.verifier])
    assert report.findings == [
        averify.Finding(
            "archived_online",
            "record 5 is numbered within the archived records (1 to 30) but in the database (1 records): inserted",
            seq=5,
        )
    ]


async def test_runs_archive_at_most_max_records_each(db: Database, signer: CheckpointSigner, out: Path) -> None:
    """A bounded transaction a run: a backlog goes over several runs, each its own file."""
    ranges = []
    for _ in range(4):
        done = await aarchive.archive(db, signer, NODE, CUTOFF, out, max_records=12)
        ranges.append((done.archive.first_seq, done.archive.last_seq) if done.archive else None)
    assert ranges == [(1, 12), (13, 24), (25, 30), None]
    report = await averify.verify(db, [signer.verifier])
    assert (report.ok, report.archived, report.archives) == (True, 30, 3)


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
    with sqlite3.connect(path) as con:  # the true range after record 50, under the checkpoint signed at 50
        con.execute("UPDATE audit_archives SET frontier = ?", (frontier,))
        tree = merkle.CompactRange(30, split_frontier(frontier))
        for (leaf,) in con.execute("SELECT leaf_hash FROM audit_records WHERE seq <= 50 ORDER BY seq"):
            tree.append(leaf)
        (root, ts, node, key_id, signature) = con.execute(
            "SELECT root_hash, ts, node, key_id, signature FROM audit_checkpoints WHERE tree_size = 50"
        ).fetchone()
        assert root == tree.root()  # a genuine signature over the genuine root: anyone reading the log has it
        con.execute(
            "INSERT INTO audit_archives SELECT 31, 50, last_ts, ?, ?, ?, ?, ?, ?, 'forged', sha256 FROM audit_archives",
            (b"".join(tree.nodes), root, ts, node, key_id, signature),
        )
        con.execute("DELETE FROM audit_records WHERE seq <= 50")  # the trigger now allows it
    report = await averify.verify(db, [signer.verifier])
    assert [f.message for f in report.findings] == [
        "the archive of records 31 to 50 (forged): its signature is invalid"
    ]


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
    assert refused(items[:-1]) == "copy.jsonl.gz: truncated: no signature after record 30"
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
    real_record = aarchive._record

    async def meanwhile(database: Database, made: aarchive.Archive, archived_to: int) -> None:
        monkeypatch.setattr(aarchive, "_record", real_record)
        first = await aarchive.archive(database, signer, NODE, CUTOFF, out)  # the other node commits first
        assert first.records == 30
        await real_record(database, made, archived_to)

    monkeypatch.setattr(aarchive, "_record", meanwhile)
    with pytest.raises(ArchiveError, match="another mssgw audit archive ran meanwhile: this one recorded nothing"):
        await aarchive.archive(db, signer, NODE, CUTOFF, other)
    assert [p.name for p in other.iterdir()] == [aarchive.LOCK_FILE]
    names = sorted(p.name for p in out.iterdir())  # noqa: ASYNC240
    assert names == [aarchive.LOCK_FILE, "audit-000000000001-000000000030.jsonl.gz"]
    assert [r.file for r in await aarchive.archives(db)] == ["audit-000000000001-000000000030.jsonl.gz"]


async def test_two_nodes_archiving_at_once_on_postgresql(
    pg_cluster: PostgresCluster, signer: CheckpointSigner, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two nodes of one PostgreSQL archive the same range at the same moment, each to its own directory:
    the second's insert of the archive row waits on the first's uncommitted one, then fails on the key
    once the first commits. The second records nothing and removes its file; the first's archive stands.
    A row lock the test holds on record 1 keeps the first's transaction open (its delete waits for it)
    until both are seen waiting in pg_stat_activity."""
    name = pg_cluster.create_database("audit_archive_race")
    request.addfinalizer(lambda: pg_cluster.drop_database(name))
    url = pg_cluster.url(name)
    first_db = await build(url, signer)
    second_db, holder = Database(url, AUDIT_MIGRATIONS, AUDIT_HEAD), Database(url, AUDIT_MIGRATIONS, AUDIT_HEAD)
    dirs = [tmp_path / "first", tmp_path / "second"]
    for d in dirs:
        d.mkdir()
    recording = [asyncio.Event(), asyncio.Event()]
    real_record = aarchive._record

    async def record(database: Database, made: aarchive.Archive, archived_to: int) -> None:
        recording[database is second_db].set()
        await real_record(database, made, archived_to)

    async def waiting() -> int:
        async with holder.engine.connect() as conn:
            query = "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND wait_event_type = 'Lock'"
            return int((await conn.execute(text(query), {"db": name})).scalar_one())

    request.getfixturevalue("monkeypatch").setattr(aarchive, "_record", record)
    try:
        async with holder.engine.begin() as lock:
            await lock.execute(text("SELECT seq FROM audit_records WHERE seq = 1 FOR UPDATE"))
            first = asyncio.create_task(aarchive.archive(first_db, signer, NODE, CUTOFF, dirs[0]))
            await asyncio.wait_for(recording[0].wait(), 30)
            for _ in range(300):  # the first's delete waits for the test's lock
                if await waiting() == 1:
                    break
                await asyncio.sleep(0.05)
            second = asyncio.create_task(aarchive.archive(second_db, signer, NODE, CUTOFF, dirs[1]))
            for _ in range(300):  # and the second's insert for the first's row
                if recording[1].is_set() and await waiting() == 2:
                    break
                await asyncio.sleep(0.05)
            assert await waiting() == 2
            assert not first.done()
            assert not second.done()
        done = await asyncio.wait_for(first, 30)
        with pytest.raises(ArchiveError) as lost:
            await asyncio.wait_for(second, 30)
        assert str(lost.value) == "another mssgw audit archive ran meanwhile: this one recorded nothing"
        assert (done.records, done.path) == (30, dirs[0] / "audit-000000000001-000000000030.jsonl.gz")
        assert [p.name for p in dirs[1].iterdir()] == [aarchive.LOCK_FILE]
        assert [r.file for r in await aarchive.archives(first_db)] == [done.path.name]
        async with holder.engine.connect() as conn:
            seqs = (await conn.execute(text("SELECT min(seq), count(*) FROM audit_records"))).one()
        assert tuple(seqs) == (31, 25)
        report = await averify.verify(second_db, [signer.verifier])
        assert (report.ok, report.archived, report.findings) == (True, 30, [])
    finally:
        for database in (first_db, second_db, holder):
            await database.close()


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


async def test_read_file_takes_only_what_archive_writes(
    db: Database, signer: CheckpointSigner, out: Path, tmp_path: Path
) -> None:
    """Each malformed file is an ArchiveError naming the line and why, never another exception: a file is
    read by an auditor's `audit verify --archive`, possibly years later, and must mean one thing."""
    done = await aarchive.archive(db, signer, NODE, CUTOFF, out)
    assert done.path is not None
    keys = {signer.key_id: signer.verifier}
    raw = gzip.decompress(done.path.read_bytes()).splitlines(keepends=True)
    copy = tmp_path / "bad.jsonl.gz"

    def refused(lines: list[bytes]) -> str:
        copy.write_bytes(gzip.compress(b"".join(lines)))
        with pytest.raises(ArchiveError) as info:
            read_file(copy, keys)
        return str(info.value).removeprefix("bad.jsonl.gz: ")

    def edited(n: int, change: Any) -> list[bytes]:
        value = json.loads(raw[n])
        change(value)
        return [*raw[:n], json.dumps(value, separators=(",", ":")).encode() + b"\n", *raw[n + 1 :]]

    duplicate = raw[3].replace(b'{"seq":3,', b'{"seq":3,"action":"admin.fake",', 1)
    assert refused([*raw[:3], duplicate, *raw[4:]]) == "line 4 is not JSON as archives write it (a key appears twice)"
    spaced = json.dumps(json.loads(raw[3])).encode() + b"\n"  # the same value, other spacing
    assert refused([*raw[:3], spaced, *raw[4:]]) == "line 4 is not JSON as archives write it"
    assert refused(edited(0, lambda v: v.update(first_seq=True))) == "header: True is not an integer"
    assert refused(edited(0, lambda v: v.update(extra=1))).startswith("not an audit archive")
    assert refused(edited(3, lambda v: v.update(extra=1))) == "line 4 is not a record (its keys are not a record's)"
    assert refused(edited(3, lambda v: v.pop("cid"))) == "line 4 is not a record (its keys are not a record's)"
    assert refused(edited(3, lambda v: v.update(seq=3.0))) == "line 4 is not a record (3.0 is not an integer)"
    deep = "[" * 100_000 + "]" * 100_000
    assert refused(edited(3, lambda v: v.update(request=deep))).startswith("line 4 is not a record (")
    assert refused([*raw[:3], b'{"a":' + b"[" * 100_000 + b"\n", *raw[4:]]).startswith("line 4 is not JSON")
    assert refused(edited(len(raw) - 1, lambda v: v.update(archive=[]))) == (
        "the closing signature is unreadable (its keys are not an archive's)"
    )
    assert refused(edited(0, lambda v: v.update(node="other.node"))) == (
        "its signature covers another range or node than its header"
    )
    assert refused([*raw, raw[-1]]) == f"line {len(raw) + 1} follows the signature"
    assert refused([b"\xff\xfe" + raw[0], *raw[1:]]).startswith("line 1 is not JSON")
    # Damaged bytes anywhere past the gzip header (whose name and time fields say nothing of the records:
    # the SHA-256 the database holds covers them): always the same kind of refusal. A few bits of a deflate
    # stream are never read (the padding after the last block, some Huffman table bits), so a flip there
    # leaves the records as they were: the file is then read exactly as the original, never refused.
    data = done.path.read_bytes()
    original = read_file(done.path, keys)
    payload = data.index(b"\0", 10) + 1  # RFC 1952 §2.3: 10 octets, then the NUL-terminated FNAME
    rng = random.Random(7)
    refusals = 0
    for _ in range(200):
        damaged = bytearray(data)
        damaged[rng.randrange(payload, len(damaged))] ^= 1 << rng.randrange(8)
        copy.write_bytes(bytes(damaged))
        if _inflates_to(bytes(damaged), b"".join(raw)):
            assert _same_records(read_file(copy, keys), original)
            continue
        with pytest.raises(ArchiveError):
            read_file(copy, keys)
        refusals += 1
    assert refusals >= 190
