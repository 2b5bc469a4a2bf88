"""The audit log writer on a real SQLite file: sequence, group commit, leaf bytes, checkpoints, proofs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from gateway.audit import log as audit_log
from gateway.audit import merkle
from gateway.audit import verify as averify
from gateway.audit.checkpoint import CheckpointSigner, checkpoint_message
from gateway.audit.events import AuditEvent
from gateway.audit.log import AUDIT_HEAD, AUDIT_MIGRATIONS, MAX_SUMMARY, AuditLog, Checkpoint, record_bytes
from gateway.audit.models import AuditRecord
from gateway.store.db import Database

NODE = "node-a.ch-test.mssante.fr"
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
APPEND_ONLY = "audit records are append-only"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{db_path}", AUDIT_MIGRATIONS, AUDIT_HEAD)
    await database.migrate()
    yield database
    await database.close()


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> CheckpointSigner:
    return CheckpointSigner.generate(tmp_path_factory.mktemp("keys") / "checkpoint.pem")


@pytest.fixture
def log(db: Database, signer: CheckpointSigner) -> AuditLog:
    return AuditLog(db, NODE, signer)


def rows(db_path: Path) -> list[dict[str, Any]]:
    """Every stored record, read with the plain sqlite3 module (not through the code under test)."""
    con = sqlite3.connect(db_path)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM audit_records ORDER BY seq")]
    finally:
        con.close()


def head_size(db_path: Path) -> int:
    con = sqlite3.connect(db_path)
    try:
        return int(con.execute("SELECT size FROM audit_head WHERE id = 1").fetchone()[0])
    finally:
        con.close()


def stored_leaf(row: dict[str, Any]) -> bytes:
    return merkle.leaf_hash(
        record_bytes(
            row["seq"],
            row["ts"],
            row["node"],
            row["author"],
            row["action"],
            row["principal"],
            row["peer"],
            row["cid"],
            row["request"],
            row["response"],
        )
    )


EVENTS = [AuditEvent.MAILBOX_CREATED, AuditEvent.MAILBOX_SHOWN, AuditEvent.TRUST_DOMAIN_ADDED, AuditEvent.PKI_ISSUED]


async def fill(log: AuditLog, first: int, last: int) -> list[int]:
    return [
        await log.record(EVENTS[i % len(EVENTS)], author=f"admin{i % 3}@ops", principal=f"p{i}@x", request={"n": i})
        for i in range(first, last + 1)
    ]


# --- Sequence numbers, timestamps, group commit ------------------------------------------------------------


async def test_sequence_numbers_start_at_one_without_gaps_and_time_never_goes_back(
    log: AuditLog, db_path: Path
) -> None:
    assert await log.size() == 0
    seqs = await fill(log, 1, 30)
    assert seqs == list(range(1, 31))
    stored = rows(db_path)
    assert [r["seq"] for r in stored] == list(range(1, 31))
    assert [json.loads(r["request"]) for r in stored] == [{"n": i} for i in range(1, 31)]
    assert all(TS.fullmatch(r["ts"]) for r in stored)
    stamps = [r["ts"] for r in stored]
    assert stamps == sorted(stamps)
    assert await log.size() == 30
    assert await log.count() == 30
    assert head_size(db_path) == 30


async def test_time_never_goes_back_between_two_nodes_whose_clocks_differ(
    db: Database, log: AuditLog, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node B's clock an hour ahead appends between two of node A's records: A's next record takes B's
    time, not A's own (A used to continue from the last time it had written itself)."""
    skew = [timedelta(0)]

    class Clock(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Clock:
            return cls.fromtimestamp((datetime.now(tz) + skew[0]).timestamp(), tz)

    monkeypatch.setattr(audit_log, "datetime", Clock)
    async with Database(f"sqlite+aiosqlite:///{db_path}", AUDIT_MIGRATIONS, AUDIT_HEAD) as other:
        b = AuditLog(other, "node-b.ch-test.mssante.fr", None)
        await log.record(AuditEvent.NODE_STARTED, author="node-a")
        skew[0] = timedelta(hours=1)
        await b.record(AuditEvent.NODE_STARTED, author="node-b")
        skew[0] = timedelta(0)
        await log.record(AuditEvent.NODE_STOPPED, author="node-a")
        await log.record(AuditEvent.NODE_STOPPED, author="node-a")  # no other writer since: its own time
    stamps = [r["ts"] for r in rows(db_path)]
    assert stamps[2] == stamps[1] > stamps[0]
    assert stamps == sorted(stamps)


async def test_concurrent_records_share_one_transaction_per_batch(db: Database, log: AuditLog, db_path: Path) -> None:
    # The append's statements run on the raw SQLite connection (Database.raw_writing): SQLite's own trace.
    statements: list[str] = []
    db._raw_writer().set_trace_callback(statements.append)

    def records_per_transaction() -> list[int]:
        counts, n = [], 0
        for sql in statements:
            if sql.startswith("INSERT INTO audit_records"):
                n += 1
            elif sql == "COMMIT":
                counts.append(n)
                n = 0
        return counts

    # All 200 calls are queued before the flusher task first runs: one batch, one transaction.
    seqs = await asyncio.gather(
        *(log.record(AuditEvent.DIRECTORY_SEARCHED, author=f"u{i}@x", request={"i": i}) for i in range(200))
    )
    assert seqs == list(range(1, 201))
    assert records_per_transaction() == [200]
    stored = rows(db_path)
    assert len(stored) == 200
    assert head_size(db_path) == 200 == await log.size()
    # gather order is queue order is sequence order
    assert [json.loads(r["request"])["i"] for r in stored] == list(range(200))
    stamps = [r["ts"] for r in stored]
    assert stamps == sorted(stamps)

    # Calls made while a batch is being written wait for the next transaction, all together.
    first = [
        asyncio.create_task(log.record(AuditEvent.MAILBOX_SHOWN, author="a@x", request={"w": i})) for i in range(60)
    ]
    await asyncio.sleep(0)  # the 60 callers queue, the flusher is scheduled
    await asyncio.sleep(0)  # the flusher takes the batch and starts its transaction
    second = [
        asyncio.create_task(log.record(AuditEvent.MAILBOX_SHOWN, author="b@x", request={"w": i})) for i in range(40)
    ]
    assert await asyncio.gather(*first) == list(range(201, 261))
    assert await asyncio.gather(*second) == list(range(261, 301))
    assert records_per_transaction() == [200, 60, 40]
    assert len(rows(db_path)) == 300 == head_size(db_path)


async def test_a_cancelled_caller_does_not_stall_the_rest_of_its_batch(log: AuditLog, db_path: Path) -> None:
    tasks = [
        asyncio.create_task(log.record(AuditEvent.MAILBOX_SHOWN, author="a@x", request={"i": i})) for i in range(5)
    ]
    await asyncio.sleep(0)  # all five are queued in one batch
    tasks[1].cancel()
    _done, pending = await asyncio.wait(tasks, timeout=2)
    assert not pending
    assert tasks[1].cancelled()
    assert [t.result() for t in (tasks[0], *tasks[2:])] == [1, 3, 4, 5]
    # The cancelled caller's record was committed with its batch all the same.
    assert [r["seq"] for r in rows(db_path)] == [1, 2, 3, 4, 5]
    assert await log.record(AuditEvent.MAILBOX_SHOWN, author="a@x") == 6


# --- The bytes a leaf covers -------------------------------------------------------------------------------


async def test_stored_leaf_is_the_hash_of_the_canonical_record_bytes(log: AuditLog, db_path: Path) -> None:
    seq = await log.record(
        AuditEvent.MAILBOX_CREATED,
        author="admin@ch-test.mssante.fr",
        principal="dr.martin@ch-test.mssante.fr",
        peer="192.0.2.10",
        cid="c0ffee",
        request={"zeta": [1, 2], "address": "dr.martin@ch-test.mssante.fr", "name": "Hélène Martin"},
        response={"result": "done", "id": 7},
    )
    assert seq == 1
    await log.record(AuditEvent.NODE_STARTED, author="system")
    first, second = rows(db_path)
    ts = first["ts"]
    assert first["request"] == '{"address":"dr.martin@ch-test.mssante.fr","name":"Hélène Martin","zeta":[1,2]}'
    assert first["response"] == '{"id":7,"result":"done"}'
    expected = (
        f'["mssgw-audit/1",1,"{ts}","{NODE}","admin@ch-test.mssante.fr","admin.mailbox.created",'
        '"dr.martin@ch-test.mssante.fr","192.0.2.10","c0ffee",'
        '{"address":"dr.martin@ch-test.mssante.fr","name":"Hélène Martin","zeta":[1,2]},{"id":7,"result":"done"}]'
    ).encode()
    assert (
        record_bytes(
            1,
            ts,
            NODE,
            "admin@ch-test.mssante.fr",
            "admin.mailbox.created",
            "dr.martin@ch-test.mssante.fr",
            "192.0.2.10",
            "c0ffee",
            first["request"],
            first["response"],
        )
        == expected
    )
    assert first["leaf_hash"] == hashlib.sha256(b"\x00" + expected).digest() == stored_leaf(first)

    # Absent fields are JSON nulls, empty summaries are {}.
    expected2 = f'["mssgw-audit/1",2,"{second["ts"]}","{NODE}","system","node.started",null,null,null,{{}},{{}}]'
    assert second["leaf_hash"] == hashlib.sha256(b"\x00" + expected2.encode()).digest()

    # The sequence number is inside the leaf: the same content at another position hashes differently.
    assert stored_leaf({**first, "seq": 2}) != first["leaf_hash"]


async def test_every_stored_leaf_matches_its_fields(log: AuditLog, db_path: Path) -> None:
    await fill(log, 1, 12)
    stored = rows(db_path)
    assert len(stored) == 12
    assert [r["leaf_hash"] for r in stored] == [stored_leaf(r) for r in stored]
    assert len({r["leaf_hash"] for r in stored}) == 12


# --- Checkpoints -------------------------------------------------------------------------------------------


async def test_checkpoint_signs_size_and_root_of_all_leaves(
    log: AuditLog, signer: CheckpointSigner, db_path: Path
) -> None:
    await fill(log, 1, 7)
    cp = await log.checkpoint()
    assert cp is not None
    leaves = [r["leaf_hash"] for r in rows(db_path)]
    assert (cp.id, cp.tree_size, cp.node, cp.key_id) == (1, 7, NODE, signer.key_id)
    assert cp.root_hash == merkle.root_hash(leaves)
    assert TS.fullmatch(cp.ts)
    message = checkpoint_message(NODE, 7, cp.root_hash, cp.ts)
    assert message == (
        f"mssgw-audit-checkpoint/1\n{NODE}\n7\n{base64.b64encode(cp.root_hash).decode()}\n{cp.ts}\n".encode()
    )
    signer.verifier.public_key.verify(cp.signature, message)  # raises InvalidSignature if wrong
    assert signer.verifier.verify(message, cp.signature)
    assert not signer.verifier.verify(checkpoint_message(NODE, 8, cp.root_hash, cp.ts), cp.signature)
    assert not signer.verifier.verify(checkpoint_message(NODE, 7, merkle.root_hash(leaves[:6]), cp.ts), cp.signature)
    assert await log.latest_checkpoint() == cp

    # Nothing new: no checkpoint, unless forced.
    assert await log.checkpoint() is None
    assert await log.latest_checkpoint() == cp
    forced = await log.checkpoint(force=True)
    assert forced is not None
    assert (forced.id, forced.tree_size, forced.root_hash) == (2, 7, cp.root_hash)
    assert forced.ts >= cp.ts
    assert signer.verifier.verify(checkpoint_message(NODE, 7, cp.root_hash, forced.ts), forced.signature)

    await fill(log, 8, 8)
    third = await log.checkpoint()
    assert third is not None
    assert (third.id, third.tree_size) == (3, 8)
    assert third.root_hash == merkle.root_hash([r["leaf_hash"] for r in rows(db_path)])
    assert await log.latest_checkpoint() == third


async def test_checkpoint_of_the_empty_log_and_without_a_key(db: Database, log: AuditLog) -> None:
    cp = await log.checkpoint()
    assert cp is not None
    assert (cp.tree_size, cp.root_hash) == (0, hashlib.sha256(b"").digest())
    assert await log.checkpoint() is None
    with pytest.raises(RuntimeError, match="this audit log has no checkpoint key"):
        await AuditLog(db, NODE, None).checkpoint()


def test_signing_key_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit.pem"
    signer = CheckpointSigner.generate(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert len(signer.key_id) == 16
    with pytest.raises(FileExistsError):
        CheckpointSigner.generate(path)


# --- Summaries ---------------------------------------------------------------------------------------------


async def test_secrets_are_redacted_from_stored_summaries(log: AuditLog, db_path: Path) -> None:
    await log.record(
        AuditEvent.MAILBOX_PASSWORD_SET,
        author="admin@ops",
        request={
            "address": "dr.martin@x",
            "password": "hunter2-secret-value",
            "totp_secret": "JBSWY3DPEHPK3PXP",
            "p12_password": "p12-pass-value",
            "nested": {"token": "tok-value", "ok": 1},
            "list": [{"private_key": "pk-value"}, 3],
        },
        response={"result": "done", "otp": "918273645", "passphrase": "phrase-value"},
    )
    (row,) = rows(db_path)
    assert row["request"] == (
        '{"address":"dr.martin@x","list":[{"private_key":"[redacted]"},3],"nested":{"ok":1,"token":"[redacted]"},'
        '"p12_password":"[redacted]","password":"[redacted]","totp_secret":"[redacted]"}'
    )
    assert row["response"] == '{"otp":"[redacted]","passphrase":"[redacted]","result":"done"}'
    assert row["leaf_hash"] == stored_leaf(row)
    raw = b"".join(p.read_bytes() for p in db_path.parent.glob("audit.db*"))
    assert b"dr.martin@x" in raw
    for secret in (b"hunter2-secret-value", b"JBSWY3DPEHPK3PXP", b"p12-pass-value", b"tok-value", b"pk-value"):
        assert secret not in raw
    assert b"phrase-value" not in raw
    assert b"918273645" not in raw


async def test_oversized_summaries_keep_only_their_keys(log: AuditLog, db_path: Path) -> None:
    exact = "x" * (MAX_SUMMARY - len('{"v":""}'))
    await log.record(AuditEvent.DIRECTORY_IMPORTED, author="a@x", request={"v": exact})  # 4096 bytes: kept
    await log.record(AuditEvent.DIRECTORY_IMPORTED, author="a@x", request={"v": exact + "x"})  # 4097: cut
    # The cap counts bytes, not characters: 2045 "é" are 4090 bytes.
    await log.record(AuditEvent.DIRECTORY_IMPORTED, author="a@x", request={"v": "é" * 2045})
    await log.record(
        AuditEvent.DIRECTORY_EXPORTED,
        author="a@x",
        request={"to": "file.csv", "password": "x"},
        response={"rows": ["r" * 100] * 50, "count": 50},
    )
    stored = rows(db_path)
    assert len(stored[0]["request"].encode()) == MAX_SUMMARY
    assert json.loads(stored[0]["request"]) == {"v": exact}
    assert stored[1]["request"] == '{"keys":["v"],"truncated":true}'
    assert stored[2]["request"] == '{"keys":["v"],"truncated":true}'
    assert stored[3]["request"] == '{"password":"[redacted]","to":"file.csv"}'
    assert stored[3]["response"] == '{"keys":["count","rows"],"truncated":true}'
    assert [r["leaf_hash"] for r in stored] == [stored_leaf(r) for r in stored]


async def test_only_audit_events_and_json_values_are_accepted(log: AuditLog, db_path: Path) -> None:
    with pytest.raises(TypeError, match="audit events come from the AuditEvent vocabulary"):
        await log.record("admin.mailbox.created", author="a@x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="audit summaries hold JSON values, not object"):
        await log.record(AuditEvent.MAILBOX_CREATED, author="a@x", request={"x": object()})
    assert rows(db_path) == []
    assert await log.size() == 0
    # A StrEnum member is the event, its value alone is not; enum and bytes values are rendered as text.
    await log.record(AuditEvent.MAILBOX_CREATED, author="a@x", request={"e": AuditEvent.NODE_STARTED, "b": b"\x01"})
    assert rows(db_path)[0]["request"] == '{"b":"01","e":"node.started"}'


# --- Append-only -------------------------------------------------------------------------------------------


async def test_triggers_refuse_update_and_delete(db: Database, log: AuditLog, db_path: Path) -> None:
    await fill(log, 1, 3)
    before = rows(db_path)
    with pytest.raises(IntegrityError, match=APPEND_ONLY):
        async with db.write() as s:
            await s.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(author="mallory@x"))
    with pytest.raises(IntegrityError, match=APPEND_ONLY):
        async with db.write() as s:
            await s.execute(delete(AuditRecord).where(AuditRecord.seq == 3))
    con = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match=APPEND_ONLY):
            con.execute("UPDATE audit_records SET request = '{}' WHERE seq = 1")
        with pytest.raises(sqlite3.IntegrityError, match=APPEND_ONLY):
            con.execute("DELETE FROM audit_records")
        con.rollback()
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    finally:
        con.close()
    assert names == {"audit_records_no_update", "audit_records_no_delete"}
    assert rows(db_path) == before
    assert await fill(log, 4, 4) == [4]  # appending still works


# --- Proofs ------------------------------------------------------------------------------------------------


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D_n), written out recursively as in the RFC."""
    n = len(d)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*rfc_path(m, d[:k]), merkle.root_hash(d[k:])]
    return [*rfc_path(m - k, d[k:]), merkle.root_hash(d[:k])]


def rfc_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    """RFC 9162 §2.1.4.1 SUBPROOF(m, D_n, b), written out recursively as in the RFC."""
    n = len(d)
    if m == n:
        return [] if b else [merkle.root_hash(d)]
    k = _split(n)
    if m <= k:
        return [*rfc_subproof(m, d[:k], b), merkle.root_hash(d[k:])]
    return [*rfc_subproof(m - k, d[k:], False), merkle.root_hash(d[:k])]


async def test_inclusion_and_consistency_proofs_verify_against_checkpoints(
    db: Database, log: AuditLog, db_path: Path
) -> None:
    cps: list[Checkpoint] = []
    for first, upto in ((1, 10), (11, 25), (26, 37)):
        await fill(log, first, upto)
        cp = await log.checkpoint()
        assert cp is not None
        cps.append(cp)
    leaves = [r["leaf_hash"] for r in rows(db_path)]
    assert [c.tree_size for c in cps] == [10, 25, 37]
    assert len(leaves) == 37

    checked = 0
    for cp in cps:
        assert cp.root_hash == merkle.root_hash(leaves[: cp.tree_size])
        for seq in sorted({1, 2, 8, 10, 11, 16, 17, 25, 33, 37}):
            if seq > cp.tree_size:
                continue
            proof = await averify.inclusion_proof(db, seq, cp.tree_size)
            assert proof == rfc_path(seq - 1, leaves[: cp.tree_size])
            assert merkle.verify_inclusion(leaves[seq - 1], seq - 1, cp.tree_size, proof, cp.root_hash)
            # ... and for no other leaf, position or root
            other = seq % cp.tree_size  # index of the next record, wrapping
            assert not merkle.verify_inclusion(leaves[other], seq - 1, cp.tree_size, proof, cp.root_hash)
            assert not merkle.verify_inclusion(leaves[seq - 1], other, cp.tree_size, proof, cp.root_hash)
            if cp is not cps[-1]:
                assert not merkle.verify_inclusion(leaves[seq - 1], seq - 1, cp.tree_size, proof, cps[-1].root_hash)
            checked += 1
    assert checked == 4 + 8 + 10
    assert len(await averify.inclusion_proof(db, 1, 10)) == 4
    assert len(await averify.inclusion_proof(db, 37, 37)) == 2  # 37 = 32 + 4 + 1: two siblings

    for old, new in ((cps[0], cps[1]), (cps[1], cps[2]), (cps[0], cps[2])):
        proof = await averify.consistency_proof(db, old.tree_size, new.tree_size)
        assert proof == rfc_subproof(old.tree_size, leaves[: new.tree_size], True)
        assert merkle.verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof)
        assert not merkle.verify_consistency(old.tree_size, new.tree_size, new.root_hash, new.root_hash, proof)
        assert not merkle.verify_consistency(old.tree_size, new.tree_size, old.root_hash, old.root_hash, proof)
    assert await averify.consistency_proof(db, 37, 37) == []
    # 8 is a power of two: the old root is a node of the new tree and is left out of the proof,
    # which holds MTH(D[8:16]), MTH(D[16:32]), MTH(D[32:37]).
    assert await averify.consistency_proof(db, 8, 37) == [
        merkle.root_hash(leaves[8:16]),
        merkle.root_hash(leaves[16:32]),
        merkle.root_hash(leaves[32:37]),
    ]

    with pytest.raises(ValueError, match="the log holds 37 records, fewer than tree size 38"):
        await averify.inclusion_proof(db, 1, 38)
    with pytest.raises(ValueError, match="the log holds 37 records, fewer than tree size 40"):
        await averify.consistency_proof(db, 10, 40)
    with pytest.raises(ValueError, match="leaf index 10 is out of range for a tree of size 10"):
        await averify.inclusion_proof(db, 11, 10)
