"""`verify` on a real SQLite audit log tampered with the way an attacker with file access would do it.

Each test starts from a copy of one log of 50 records with signed checkpoints #1, #2, #3 at tree sizes 10,
25 and 50, drops the append-only triggers with the plain sqlite3 module, changes rows, and asserts the
exact findings: kind, record and checkpoint named, message.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import merkle
from gateway.audit import verify as averify
from gateway.audit.checkpoint import CheckpointSigner, CheckpointVerifier, checkpoint_message
from gateway.audit.events import AuditEvent
from gateway.audit.log import AUDIT_HEAD, AUDIT_MIGRATIONS, AuditLog, Checkpoint, record_bytes
from gateway.audit.verify import Finding, Report
from gateway.store.db import Database

NODE = "node-a.ch-test.mssante.fr"
SIZES = (10, 25, 50)
EVENTS = [AuditEvent.MAILBOX_CREATED, AuditEvent.MAILBOX_SHOWN, AuditEvent.TRUST_DOMAIN_ADDED, AuditEvent.PKI_ISSUED]


@dataclass
class Log:
    path: Path
    signer: CheckpointSigner
    cps: list[Checkpoint]  # checkpoints #1, #2, #3 as written
    leaves: list[bytes]  # leaf hashes as written, index = seq - 1


def db_of(path: Path) -> Database:
    return Database(f"sqlite+aiosqlite:///{path}", AUDIT_MIGRATIONS, AUDIT_HEAD)


async def _build(path: Path, signer: CheckpointSigner) -> list[Checkpoint]:
    db = db_of(path)
    await db.migrate()
    log = AuditLog(db, NODE, signer)
    cps = []
    for i in range(1, SIZES[-1] + 1):
        await log.record(
            EVENTS[i % len(EVENTS)],
            author=f"admin{i % 3}@ops",
            principal=f"dr.{i}@ch-test.mssante.fr",
            peer="192.0.2.10",
            cid=f"cid{i:04d}",
            request={"n": i, "address": f"dr.{i}@ch-test.mssante.fr"},
            response={"result": "done"},
        )
        if i in SIZES:
            cp = await log.checkpoint()
            assert cp is not None
            cps.append(cp)
    await db.close()
    return cps


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Log:
    base = tmp_path_factory.mktemp("template")
    signer = CheckpointSigner.generate(base / "keys" / "checkpoint.pem")
    path = base / "db" / "audit.db"
    with ThreadPoolExecutor(1) as pool:  # its own event loop, apart from the tests' loops
        cps = pool.submit(asyncio.run, _build(path, signer)).result()
    leaves = [r["leaf_hash"] for r in rows(path)]
    return Log(path, signer, cps, leaves)


@pytest.fixture
def log(template: Log, tmp_path: Path) -> Log:
    """A fresh copy of the template log for one test to tamper with."""
    for f in template.path.parent.glob("audit.db*"):
        shutil.copy(f, tmp_path / f.name)
    return Log(tmp_path / "audit.db", template.signer, template.cps, template.leaves)


# --- Attacker's tools: the plain sqlite3 module on the database file ----------------------------------------


def rows(path: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM audit_records ORDER BY seq")]
    finally:
        con.close()


def row(path: Path, seq: int) -> dict[str, Any]:
    (r,) = [r for r in rows(path) if r["seq"] == seq]
    return r


def tamper(path: Path, sql: str, *params: Any) -> None:
    """Run one statement on the file, after dropping the append-only triggers."""
    con = sqlite3.connect(path)
    try:
        con.execute("DROP TRIGGER IF EXISTS audit_records_no_update")
        con.execute("DROP TRIGGER IF EXISTS audit_records_no_delete")
        con.execute(sql, params)
        con.commit()
    finally:
        con.close()


def leaf_of_row(r: dict[str, Any]) -> bytes:
    fields = ("seq", "ts", "node", "author", "action", "principal", "peer", "cid", "request", "response")
    return merkle.leaf_hash(record_bytes(*(r[k] for k in fields)))


def rewrite_head(path: Path) -> None:
    """Make the append head agree with whatever records are now in the file (no key needed)."""
    tree = merkle.CompactRange()
    for r in rows(path):
        tree.append(r["leaf_hash"])
    tamper(path, "UPDATE audit_head SET size = ?, frontier = ? WHERE id = 1", tree.size, b"".join(tree.nodes))


def add_checkpoint(path: Path, signer: CheckpointSigner, size: int, root: bytes, ts: str) -> None:
    sig = signer.sign(checkpoint_message(NODE, size, root, ts))
    tamper(
        path,
        "INSERT INTO audit_checkpoints (tree_size, root_hash, ts, node, key_id, signature) VALUES (?, ?, ?, ?, ?, ?)",
        size,
        root,
        ts,
        NODE,
        signer.key_id,
        sig,
    )


async def check(log: Log, keys: Sequence[CheckpointVerifier] | None = None) -> Report:
    db = db_of(log.path)
    try:
        return await averify.verify(db, [log.signer.verifier] if keys is None else keys)
    finally:
        await db.close()


# --- Expected findings, messages written out ---------------------------------------------------------------


def mismatch(cp: Checkpoint, first: int) -> Finding:
    where = f"in record {first}" if first == cp.tree_size else f"between record {first} and record {cp.tree_size}"
    return Finding(
        "checkpoint_mismatch",
        f"checkpoint #{cp.id} (tree size {cp.tree_size}, {cp.ts}) does not match the records: they differ from "
        f"what was signed {where}",
        seq=first,
        checkpoint=cp.id,
    )


def head(size: int, found: int) -> Finding:
    if size > found:
        return Finding("head", f"the append head counts {size} records, the log holds {found}")
    return Finding("head", f"the append head's root over {size} records differs from the root of the stored records")


def truncated(cp: Checkpoint, holds: int) -> Finding:
    return Finding(
        "truncated",
        f"log truncated: checkpoint #{cp.id} ({cp.ts}) covers {cp.tree_size} records, the log holds {holds}",
        seq=holds + 1,
        checkpoint=cp.id,
    )


def bad_signature(cp: Checkpoint) -> Finding:
    return Finding(
        "bad_signature",
        f"checkpoint #{cp.id} (tree size {cp.tree_size}, {cp.ts}) has an invalid signature",
        checkpoint=cp.id,
    )


# --- Intact ------------------------------------------------------------------------------------------------


def test_template_is_what_the_tests_assume(template: Log) -> None:
    assert [(c.id, c.tree_size) for c in template.cps] == [(1, 10), (2, 25), (3, 50)]
    assert len(template.leaves) == 50
    for cp in template.cps:
        assert cp.root_hash == merkle.root_hash(template.leaves[: cp.tree_size])
    assert [leaf_of_row(r) for r in rows(template.path)] == template.leaves


async def test_intact_log_verifies(log: Log) -> None:
    report = await check(log)
    assert report.findings == []
    assert report.ok
    assert (report.records, report.checkpoints, report.checkpoints_verified) == (50, 3, 3)
    assert report.root_hash == log.cps[-1].root_hash.hex() == merkle.root_hash(log.leaves).hex()
    assert report.as_dict() == {
        "ok": True,
        "records": 50,
        "checkpoints": 3,
        "checkpoints_verified": 3,
        "root_hash": log.cps[-1].root_hash.hex(),
        "archived": 0,
        "archives": 0,
        "checkpoints_archived": 0,
        "findings": [],
    }


async def test_records_after_the_last_checkpoint_are_checked_against_the_head(log: Log) -> None:
    db = db_of(log.path)
    audit = AuditLog(db, NODE, log.signer)
    for i in range(5):
        await audit.record(AuditEvent.NODE_STARTED, author="system", request={"i": i})
    await db.close()
    report = await check(log)
    assert report.findings == []
    assert (report.records, report.checkpoints_verified) == (55, 3)

    # A forgery past the last checkpoint, leaf hash recomputed: only the head's frontier shows it.
    forged = {**row(log.path, 53), "author": "mallory@x"}
    tamper(
        log.path, "UPDATE audit_records SET author = ?, leaf_hash = ? WHERE seq = 53", "mallory@x", leaf_of_row(forged)
    )
    report = await check(log)
    assert report.findings == [head(55, 55)]


async def test_empty_log_verifies(tmp_path: Path) -> None:
    db = db_of(tmp_path / "audit.db")
    await db.migrate()
    try:
        report = await averify.verify(db, [])
    finally:
        await db.close()
    assert report.ok
    assert (report.records, report.checkpoints, report.root_hash) == (0, 0, merkle.EMPTY_ROOT.hex())


# --- Edited records ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("request", '{"address":"dr.17@ch-test.mssante.fr","n":170}'),
        ("author", "mallory@ops"),
        ("action", str(AuditEvent.PKI_REVOKED)),
        ("ts", "2020-01-01T00:00:00.000000Z"),
    ],
)
async def test_edited_record_is_named_and_its_checkpoints_fail(log: Log, column: str, value: str) -> None:
    before = row(log.path, 17)
    assert before[column] != value
    tamper(log.path, f"UPDATE audit_records SET {column} = ? WHERE seq = 17", value)  # noqa: S608
    after = {**before, column: value}
    assert row(log.path, 17) == after
    report = await check(log)
    _cp1, cp2, cp3 = log.cps
    assert report.findings == [
        Finding("altered", f"record 17 ({after['action']}, {after['ts']}) was altered", seq=17),
        mismatch(cp2, 11),
        mismatch(cp3, 11),
        head(50, 50),
    ]
    assert (report.records, report.checkpoints_verified) == (50, 1)
    assert not report.ok


@pytest.mark.parametrize(
    ("seq", "first", "failing"),
    [(3, 1, (0, 1, 2)), (17, 11, (1, 2)), (50, 26, (2,))],
)
@pytest.mark.parametrize("head_rewritten", [False, True])
async def test_forgery_with_recomputed_leaf_is_caught_by_the_checkpoints(
    log: Log, seq: int, first: int, failing: tuple[int, ...], head_rewritten: bool
) -> None:
    forged = {**row(log.path, seq), "request": '{"n":0}'}
    leaf = leaf_of_row(forged)
    tamper(log.path, "UPDATE audit_records SET request = ?, leaf_hash = ? WHERE seq = ?", '{"n":0}', leaf, seq)
    assert leaf_of_row(row(log.path, seq)) == row(log.path, seq)["leaf_hash"]  # self-consistent forgery
    if head_rewritten:
        rewrite_head(log.path)
    report = await check(log)
    expected = [mismatch(log.cps[i], first) for i in failing]
    assert report.findings == expected + ([] if head_rewritten else [head(50, 50)])
    assert not any(f.kind == "altered" for f in report.findings)
    assert report.checkpoints_verified == 3 - len(failing)


# --- Deleted, moved, truncated -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lo", "hi", "missing"),
    [(20, 20, "record 20 missing (deleted)"), (20, 22, "records 20 to 22 missing (deleted)")],
)
async def test_deleted_records_are_named(log: Log, lo: int, hi: int, missing: str) -> None:
    tamper(log.path, "DELETE FROM audit_records WHERE seq BETWEEN ? AND ?", lo, hi)
    report = await check(log)
    held = 50 - (hi - lo + 1)
    _cp1, cp2, cp3 = log.cps
    assert report.findings == [
        Finding("missing", missing, seq=lo),
        mismatch(cp2, 11),
        mismatch(cp3, 11),
        head(50, held),
    ]
    assert (report.records, report.checkpoints_verified) == (held, 1)


async def test_deleting_the_first_record(log: Log) -> None:
    tamper(log.path, "DELETE FROM audit_records WHERE seq = 1")
    report = await check(log)
    assert report.findings == [
        Finding("missing", "record 1 missing (deleted)", seq=1),
        *(mismatch(cp, 1) for cp in log.cps),
        head(50, 49),
    ]


@pytest.mark.parametrize(("a", "b"), [(30, 31), (5, 45)])
async def test_swapped_records_are_reported_as_moved(log: Log, a: int, b: int) -> None:
    ra, rb = row(log.path, a), row(log.path, b)
    columns = [k for k in ra if k != "seq"]
    assignments = ", ".join(f"{k} = ?" for k in columns)
    tamper(log.path, f"UPDATE audit_records SET {assignments} WHERE seq = ?", *(rb[k] for k in columns), a)  # noqa: S608
    tamper(log.path, f"UPDATE audit_records SET {assignments} WHERE seq = ?", *(ra[k] for k in columns), b)  # noqa: S608
    assert (row(log.path, a)["leaf_hash"], row(log.path, b)["leaf_hash"]) == (log.leaves[b - 1], log.leaves[a - 1])
    report = await check(log)
    moved_a = Finding("moved", f"record {a} holds the content of record {b} (reordered)", seq=a)
    moved_b = Finding("moved", f"record {b} holds the content of record {a} (reordered)", seq=b)
    cp1, cp2, cp3 = log.cps
    # Findings come in scan order: a record's, then the checkpoints that end there.
    expected = {
        (30, 31): [moved_a, moved_b, mismatch(cp3, 26), head(50, 50)],
        (5, 45): [moved_a, mismatch(cp1, 1), mismatch(cp2, 1), moved_b, mismatch(cp3, 1), head(50, 50)],
    }
    assert report.findings == expected[a, b]
    assert report.records == 50


@pytest.mark.parametrize(("keep", "cut"), [(45, (2,)), (20, (1, 2))])
@pytest.mark.parametrize("head_rewritten", [False, True])
async def test_truncation_is_reported_against_the_checkpoints(
    log: Log, keep: int, cut: tuple[int, ...], head_rewritten: bool
) -> None:
    tamper(log.path, "DELETE FROM audit_records WHERE seq > ?", keep)
    if head_rewritten:
        rewrite_head(log.path)
        con = sqlite3.connect(log.path)
        assert con.execute("SELECT size FROM audit_head").fetchone() == (keep,)
        con.close()
    report = await check(log)
    assert report.findings == [truncated(log.cps[i], keep) for i in cut] + ([] if head_rewritten else [head(50, keep)])
    assert (report.records, report.checkpoints_verified) == (keep, 3 - len(cut))
    assert report.root_hash == merkle.root_hash(log.leaves[:keep]).hex()


# --- Checkpoints -------------------------------------------------------------------------------------------


async def test_altered_signature_bytes(log: Log) -> None:
    sig = bytearray(log.cps[1].signature)
    sig[10] ^= 0x01
    tamper(log.path, "UPDATE audit_checkpoints SET signature = ? WHERE id = 2", bytes(sig))
    report = await check(log)
    assert report.findings == [bad_signature(log.cps[1])]
    # A checkpoint that fails its signature proves nothing: it is not counted as verified.
    assert (report.records, report.checkpoints, report.checkpoints_verified) == (50, 3, 2)


async def test_altered_root_breaks_the_signature_and_does_not_blame_the_records(log: Log) -> None:
    forged_root = merkle.root_hash(log.leaves[:24])
    tamper(log.path, "UPDATE audit_checkpoints SET root_hash = ? WHERE id = 2", forged_root)
    report = await check(log)
    # The signed message holds the root: the signature no longer matches. The records themselves are
    # intact (checkpoint #3 over all 50 verifies), so there is no checkpoint_mismatch for #2.
    assert report.findings == [bad_signature(log.cps[1])]
    assert (report.checkpoints, report.checkpoints_verified) == (3, 2)
    assert report.root_hash == log.cps[2].root_hash.hex()


async def test_altered_tree_size_breaks_the_signature(log: Log) -> None:
    tamper(log.path, "UPDATE audit_checkpoints SET tree_size = 60 WHERE id = 3")
    report = await check(log)
    cp3 = log.cps[2]
    assert report.findings == [
        Finding("bad_signature", f"checkpoint #3 (tree size 60, {cp3.ts}) has an invalid signature", checkpoint=3)
    ]


async def test_checkpoint_signed_by_another_key(log: Log, tmp_path: Path) -> None:
    other = CheckpointSigner.generate(tmp_path / "other" / "key.pem")
    assert other.key_id != log.signer.key_id
    add_checkpoint(log.path, other, 50, log.cps[2].root_hash, "2099-01-01T00:00:00.000000Z")
    report = await check(log)
    assert report.findings == [
        Finding("unknown_key", f"checkpoint #4 is signed by unknown key {other.key_id}", checkpoint=4)
    ]
    assert (report.checkpoints, report.checkpoints_verified) == (4, 3)

    report = await check(log, [log.signer.verifier, other.verifier])
    assert report.ok
    assert (report.checkpoints, report.checkpoints_verified) == (4, 4)

    report = await check(log, [other.verifier])
    assert report.findings == [
        Finding("unknown_key", f"checkpoint #{cp.id} is signed by unknown key {log.signer.key_id}", checkpoint=cp.id)
        for cp in log.cps
    ]
    assert report.checkpoints_verified == 1


async def test_attacker_rewriting_records_and_signing_his_own_checkpoint(log: Log, tmp_path: Path) -> None:
    mallory = CheckpointSigner.generate(tmp_path / "mallory" / "key.pem")
    forged = {**row(log.path, 40), "author": "mallory@x"}
    tamper(
        log.path, "UPDATE audit_records SET author = ?, leaf_hash = ? WHERE seq = 40", "mallory@x", leaf_of_row(forged)
    )
    rewrite_head(log.path)
    leaves = [r["leaf_hash"] for r in rows(log.path)]
    add_checkpoint(log.path, mallory, 50, merkle.root_hash(leaves), "2099-01-01T00:00:00.000000Z")
    report = await check(log)
    assert report.findings == [
        Finding("unknown_key", f"checkpoint #4 is signed by unknown key {mallory.key_id}", checkpoint=4),
        mismatch(log.cps[2], 26),
    ]


@pytest.mark.parametrize("sizes", [(10,), (25, 40)])
async def test_checkpoint_with_a_smaller_tree_after_a_larger_one(log: Log, sizes: tuple[int, ...]) -> None:
    for size in sizes:
        add_checkpoint(log.path, log.signer, size, merkle.root_hash(log.leaves[:size]), "2099-01-01T00:00:00.000000Z")
    report = await check(log)
    assert report.findings == [
        Finding(
            "checkpoint_order",
            f"checkpoint #{4 + i} covers {size} records, fewer than checkpoint #3 (50)",
            checkpoint=4 + i,
        )
        for i, size in enumerate(sizes)
    ]
    # Their roots are right, and validly signed.
    assert report.checkpoints_verified == 3 + len(sizes)


# --- Proofs over a tampered log ----------------------------------------------------------------------------


async def test_proofs_are_refused_over_records_that_do_not_match_their_leaves(log: Log) -> None:
    tamper(log.path, "UPDATE audit_records SET author = 'mallory@x' WHERE seq = 17")
    db = db_of(log.path)
    try:
        proof = await averify.inclusion_proof(db, 3, 10)  # records 1..10 are intact
        assert merkle.verify_inclusion(log.leaves[2], 2, 10, proof, log.cps[0].root_hash)
        with pytest.raises(ValueError, match="record 17 does not match its leaf hash"):
            await averify.inclusion_proof(db, 3, 25)
        with pytest.raises(ValueError, match="record 17 does not match its leaf hash"):
            await averify.consistency_proof(db, 10, 25)
    finally:
        await db.close()


async def test_proofs_are_refused_over_a_gap(log: Log) -> None:
    tamper(log.path, "DELETE FROM audit_records WHERE seq = 20")
    db = db_of(log.path)
    try:
        with pytest.raises(ValueError, match="record 20 is missing"):
            await averify.inclusion_proof(db, 3, 25)
    finally:
        await db.close()


# --- A live log --------------------------------------------------------------------------------------------


async def test_verify_while_another_process_appends(log: Log) -> None:
    """The node keeps appending while `audit verify` runs: no finding comes from the race."""
    writer_db = db_of(log.path)
    writer = AuditLog(writer_db, NODE, log.signer)
    stop = asyncio.Event()

    async def append() -> int:
        n = 0
        while not stop.is_set():
            await writer.record(AuditEvent.NODE_STARTED, author="system", request={"n": n})
            n += 1
        return n

    task = asyncio.create_task(append())
    reader_db = db_of(log.path)
    try:
        reports = []
        for _ in range(30):
            reports.append(await averify.verify(reader_db, [log.signer.verifier]))
            await asyncio.sleep(0)
    finally:
        stop.set()
        appended = await task
        await writer_db.close()
        await reader_db.close()
    assert appended > 0
    assert [r.findings for r in reports] == [[]] * 30
    assert all(r.records >= 50 for r in reports)


# --- What the review of stop 26 found: tampering verify missed, and contents it crashed on ------------------


def insert(path: Path, r: dict[str, Any]) -> None:
    """Add a record row with its leaf computed: INSERT is what the node's own role may do."""
    r = {**r, "leaf_hash": leaf_of_row(r)}
    con = sqlite3.connect(path)
    try:
        con.execute(
            "INSERT INTO audit_records VALUES (:seq, :ts, :node, :author, :action, :principal, :peer, :cid, "
            ":request, :response, :leaf_hash)",
            r,
        )
        con.commit()
    finally:
        con.close()


async def test_text_moved_between_request_and_response_is_altered(log: Log) -> None:
    """The leaf covers request and response joined by a comma: moving that comma keeps the leaf. Both must
    still be JSON objects, which only the original split gives."""
    r = row(log.path, 30)
    joined = f"{r['request']},{r['response']}"
    cut = r["request"].index(",")
    tamper(
        log.path, "UPDATE audit_records SET request = ?, response = ? WHERE seq = 30", joined[:cut], joined[cut + 1 :]
    )
    assert leaf_of_row(row(log.path, 30)) == log.leaves[29]  # the same leaf: no hash can tell
    report = await check(log)
    assert report.findings == [
        Finding(
            "altered",
            f"record 30 ({r['action']}, {r['ts']}) was altered: its request and response are not two JSON objects "
            "(the text between them was moved)",
            seq=30,
        )
    ]
    db = db_of(log.path)
    try:  # export and search show the stored text rather than failing
        shown = (await averify.query(db))[29]
    finally:
        await db.close()
    assert (shown["request"], shown["response"]) == (joined[:cut], joined[cut + 1 :])


async def test_records_numbered_below_one_are_inserted(log: Log) -> None:
    for seq in (0, -1):
        insert(log.path, {**row(log.path, 1), "seq": seq, "action": "admin.mailbox.deleted", "author": "forger"})
    report = await check(log)
    assert report.findings == [
        Finding("inserted", "record -1 is numbered below 1: inserted, never appended", seq=-1),
        Finding("inserted", "record 0 is numbered below 1: inserted, never appended", seq=0),
    ]
    assert report.records == 50


async def test_a_record_past_the_append_head_is_inserted(log: Log) -> None:
    """A forged record 51, the head left alone: it used to pass as a concurrent append (and would have made
    the node's next append fail on its number)."""
    insert(log.path, {**row(log.path, 50), "seq": 51, "author": "forger"})
    report = await check(log)
    assert report.findings == [
        Finding(
            "inserted",
            "record 51 is past the append head (50 records): inserted, never appended (the next "
            "append would fail on them)",
            seq=51,
        )
    ]


async def test_a_head_rolled_back_leaves_records_past_it(log: Log) -> None:
    tree = merkle.CompactRange()
    for leaf in log.leaves[:40]:
        tree.append(leaf)
    tamper(log.path, "UPDATE audit_head SET size = ?, frontier = ? WHERE id = 1", 40, b"".join(tree.nodes))
    report = await check(log)
    assert report.findings == [
        Finding(
            "inserted",
            "records 41 to 50 are past the append head (40 records): inserted, never appended (the "
            "next append would fail on them)",
            seq=41,
        )
    ]


@pytest.mark.parametrize(
    ("sql", "params", "finding"),
    [
        ("DELETE FROM audit_head", (), Finding("head", "the append head is missing")),
        (
            "UPDATE audit_head SET frontier = ? WHERE id = 1",
            (b"\x00" * 5,),
            Finding("head", "the append head is unreadable (a compact range of size 50 has 3 nodes, got 1)"),
        ),
        (
            "UPDATE audit_head SET size = 'many' WHERE id = 1",
            (),
            Finding("head", "the append head is unreadable (wrong types)"),
        ),
        (
            "INSERT INTO audit_records (seq, ts, node, author, action, request, response, leaf_hash) "
            "VALUES ('x', 't', 'n', 'a', 'b', '{}', '{}', x'00')",
            (),
            Finding("malformed", "a record is numbered 'x', not an integer"),
        ),
        (
            "UPDATE audit_checkpoints SET root_hash = 'text' WHERE id = 2",
            (),
            Finding("malformed", "checkpoint #2 holds values of the wrong type or size", checkpoint=2),
        ),
        (
            "UPDATE audit_checkpoints SET tree_size = 'ten' WHERE id = 1",
            (),
            Finding("malformed", "checkpoint #1 holds values of the wrong type or size", checkpoint=1),
        ),
    ],
)
async def test_hostile_contents_are_findings_not_crashes(
    log: Log, sql: str, params: tuple[Any, ...], finding: Finding
) -> None:
    tamper(log.path, sql, *params)
    report = await check(log)
    assert report.findings == [finding]


async def test_search_by_event_prefix_treats_underscore_as_a_character(log: Log) -> None:
    db = db_of(log.path)
    try:
        assert len(await averify.query(db, action="admin.")) > 0
        assert await averify.query(db, action="a_min.") == []  # LIKE's wildcard would have matched "admin."
    finally:
        await db.close()


async def check_with(log: Log, outside: Sequence[Checkpoint]) -> Report:
    db = db_of(log.path)
    try:
        return await averify.verify(db, [log.signer.verifier], outside)
    finally:
        await db.close()


def kept(cp: Checkpoint) -> Checkpoint:
    """A copy as an operator keeps it off the node: the dict the operational log line carries."""
    return Checkpoint.from_dict(cp.as_dict())


async def test_a_log_rolled_back_to_an_older_checkpoint_is_seen_against_a_copy_kept_outside(log: Log) -> None:
    """Records 26 to 50 and checkpoint #3 deleted, the head made to agree: the database alone is consistent
    (checkpoints #1 and #2 still match), so only a copy of #3 kept elsewhere can tell."""
    tamper(log.path, "DELETE FROM audit_records WHERE seq > 25")
    tamper(log.path, "DELETE FROM audit_checkpoints WHERE id = 3")
    rewrite_head(log.path)
    alone = await check(log)
    assert (alone.findings, alone.records, alone.checkpoints_verified) == ([], 25, 2)
    report = await check_with(log, [kept(cp) for cp in log.cps])
    cp3 = log.cps[2]
    assert report.findings == [
        Finding(
            "checkpoint_missing",
            f"checkpoint #3 (kept outside) (tree size 50, {cp3.ts}) is not in the database (deleted)",
            checkpoint=3,
        ),
        Finding(
            "truncated",
            f"log truncated: checkpoint #3 (kept outside) ({cp3.ts}) covers 50 records, the log holds 25",
            seq=26,
            checkpoint=3,
        ),
    ]
    assert (report.checkpoints, report.checkpoints_verified) == (5, 4)


async def test_copies_kept_outside_of_an_intact_log_verify(log: Log) -> None:
    report = await check_with(log, [kept(cp) for cp in log.cps])
    assert (report.findings, report.checkpoints, report.checkpoints_verified) == ([], 6, 6)


async def test_a_copy_kept_outside_must_be_signed(log: Log) -> None:
    cp = log.cps[1]
    forged = Checkpoint.from_dict({**cp.as_dict(), "tree_size": 24})
    report = await check_with(log, [forged])
    assert report.findings == [
        Finding(
            "bad_signature",
            f"checkpoint #2 (kept outside) (tree size 24, {cp.ts}) has an invalid signature",
            checkpoint=2,
        )
    ]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"signature": "not base64!"}, "Error: Only base64 data is allowed"),
        ({"root_hash": "00"}, "tree size or root hash out of range"),
        ({"tree_size": None}, "TypeError"),
    ],
)
def test_a_copy_that_is_not_a_checkpoint_is_refused(log: Log, change: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match="not a checkpoint") as exc:
        Checkpoint.from_dict({**log.cps[0].as_dict(), **change})
    assert reason in str(exc.value)
