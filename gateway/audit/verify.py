"""Verification of the audit log against its signed checkpoints; proofs; export and search.

Implementation notes
- `verify` streams the records in sequence order once, recomputing every leaf and the tree head
  incrementally (RFC 9162 compact range); memory stays O(log n) whatever the log size.
- What it reports, each finding naming the record(s) and the checkpoint concerned:
  * altered: a record's recomputed leaf differs from the leaf written with it (if the stored leaf
    matches the same content at another sequence number nearby, the record was moved there);
  * missing: a gap in sequence numbers (deleted records);
  * checkpoint mismatch: the root over the first N records differs from checkpoint N's signed root;
    the divergence lies after the last matching checkpoint. This catches forgeries that also rewrote
    the stored leaf hashes, which only the checkpoint key could make consistent;
  * truncated: a checkpoint covers more records than the log holds;
  * bad signature / unknown key: a checkpoint not signed by a trusted key; it proves nothing, so it is
    neither counted as verified nor compared with the records;
  * checkpoint order: a checkpoint covers fewer records than an earlier one;
  * checkpoint missing: a checkpoint kept outside (`outside`) is not in the database; it is also compared
    with the records like the others (a log rolled back to an older checkpoint is truncated against it);
  * head: the append head (read first, so records a running node appends meanwhile do not count)
    disagrees with the first head-size records, or is missing or unreadable;
  * inserted: a record numbered below 1 (the writer starts at 1), or past the append head as read again
    after the records (a running node moves the head in the transaction that appends, so a record
    read before that second look and past it was never appended by the log; it would also stop the
    next append);
  * altered, too: a record whose request or response is not a JSON object. The leaf hash covers the
    two texts joined by a comma, and only JSON objects make that join unambiguous;
  * malformed: a record or checkpoint whose stored values have the wrong types or sizes (written
    behind the log's back); reported, never a crash.
- Archives (gateway.audit.archive): the tree starts from the last archive's compact range, which its
  signed checkpoint vouches for; each archive must follow the previous one. Checkpoints below the
  archived size are counted, not recomputed (their records are in the files: `read_file` checks those).
  Findings: archive (a row out of sequence, unsigned or unreadable, or whose range does not give its
  root) and archived_online (records numbered within the archived ones: an archive deletes its records
  in the transaction that records it, so these were inserted).
- Inclusion and consistency proofs are computed over the stored leaf hashes after checking them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from gateway.audit import archive, merkle
from gateway.audit.checkpoint import CheckpointVerifier, checkpoint_message
from gateway.audit.log import Checkpoint, leaf_of, split_frontier
from gateway.audit.models import AuditCheckpoint, AuditHead, AuditRecord
from gateway.store.db import Database

_CHUNK = 5000
_MOVE_WINDOW = 64


@dataclass(frozen=True)
class Finding:
    # altered | moved | missing | checkpoint_mismatch | truncated | bad_signature | unknown_key | head |
    # checkpoint_order
    kind: str
    message: str
    seq: int | None = None
    checkpoint: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "seq": self.seq, "checkpoint": self.checkpoint}


@dataclass
class Report:
    records: int = 0
    checkpoints: int = 0
    checkpoints_verified: int = 0
    root_hash: str = ""
    findings: list[Finding] = field(default_factory=list)
    archived: int = 0  # records moved off line (the tree's first ones)
    archives: int = 0
    checkpoints_archived: int = 0  # checkpoints over archived records only: their files verify them

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "checkpoints": self.checkpoints,
            "checkpoints_verified": self.checkpoints_verified,
            "root_hash": self.root_hash,
            "archived": self.archived,
            "archives": self.archives,
            "checkpoints_archived": self.checkpoints_archived,
            "findings": [f.as_dict() for f in self.findings],
        }


async def _records(db: Database) -> AsyncIterator[AuditRecord]:
    """Every record in sequence order, from the lowest number stored (a forged 0 or -1 included)."""
    after: int | None = None
    while True:
        stmt = select(AuditRecord).order_by(AuditRecord.seq).limit(_CHUNK)
        if after is not None:
            stmt = stmt.where(AuditRecord.seq > after)
        async with db.read() as s:
            rows = (await s.execute(stmt)).scalars().all()
        if not rows:
            return
        for r in rows:
            yield r
        after = rows[-1].seq


async def _checkpoints(db: Database) -> list[Checkpoint]:
    async with db.read() as s:
        rows = (await s.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.id))).scalars().all()
        return [Checkpoint.of(r) for r in rows]


def _moved_from(rec: AuditRecord) -> int | None:
    """Sequence number whose leaf this record's content and stored hash match, if any, near its own."""
    for delta in range(1, _MOVE_WINDOW + 1):
        for seq in (rec.seq - delta, rec.seq + delta):
            if seq >= 1 and leaf_of(rec, seq) == rec.leaf_hash:
                return seq
    return None


def _json_objects(rec: AuditRecord) -> bool:
    """Whether the record's request and response are each a JSON object (so their join has one reading)."""
    try:
        return isinstance(json.loads(rec.request), dict) and isinstance(json.loads(rec.response), dict)
    except (ValueError, TypeError):
        return False


def _well_formed(cp: Checkpoint) -> bool:
    return (
        isinstance(cp.tree_size, int)
        and cp.tree_size >= 0
        and isinstance(cp.root_hash, bytes)
        and len(cp.root_hash) == merkle.HASH_SIZE
        and isinstance(cp.signature, bytes)
        and all(isinstance(v, str) for v in (cp.ts, cp.node, cp.key_id))
    )


async def _head(db: Database, report: Report) -> tuple[int, bytes] | None:
    """The append head's size and root, or None (reported) when it is missing or unreadable."""
    async with db.read() as s:
        head = (await s.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one_or_none()
    if head is None:
        report.findings.append(Finding("head", "the append head is missing"))
        return None
    try:
        if not isinstance(head.size, int) or not isinstance(head.frontier, bytes):
            raise TypeError("wrong types")
        return head.size, merkle.CompactRange(head.size, split_frontier(head.frontier)).root()
    except (ValueError, TypeError) as exc:
        report.findings.append(Finding("head", f"the append head is unreadable ({exc})"))
        return None


def _check_signature(cp: Checkpoint, keys: Mapping[str, CheckpointVerifier], report: Report) -> bool:
    """Whether a trusted key signed the checkpoint; only such checkpoints are evidence about the records."""
    verifier = keys.get(cp.key_id)
    if verifier is None:
        report.findings.append(
            Finding("unknown_key", f"{cp.label} is signed by unknown key {cp.key_id}", checkpoint=cp.id)
        )
        return False
    if not verifier.verify(checkpoint_message(cp.node, cp.tree_size, cp.root_hash, cp.ts), cp.signature):
        report.findings.append(
            Finding(
                "bad_signature",
                f"{cp.label} (tree size {cp.tree_size}, {cp.ts}) has an invalid signature",
                checkpoint=cp.id,
            )
        )
        return False
    return True


def _start(
    rows: Sequence[archive.Archive], keys: Mapping[str, CheckpointVerifier], report: Report
) -> merkle.CompactRange:
    """The compact range the online records continue: the last archive's, each archive checked on the way
    (its signature over `archive_message`, which no periodic checkpoint can stand in for)."""
    tree = merkle.CompactRange()
    for row in rows:
        if not row.well_formed():
            report.findings.append(Finding("malformed", "an archive row holds values of the wrong type or size"))
            continue
        what = f"the archive of records {row.first_seq} to {row.last_seq} ({row.file})"
        if row.first_seq != tree.size + 1:
            report.findings.append(
                Finding("archive", f"{what} does not follow the records before it ({tree.size})", seq=row.first_seq)
            )
        try:
            after = row.tree()
        except (ValueError, TypeError) as exc:
            report.findings.append(Finding("archive", f"{what} has an unreadable compact range ({exc})"))
            continue
        why = row.signed_by(keys)
        if why is not None:
            report.findings.append(
                Finding("archive", f"{what} is {why}" if why.startswith("signed") else f"{what}: {why}")
            )
        elif after.root() != row.root_hash:
            report.findings.append(Finding("archive", f"{what}: its compact range does not give its signed root"))
        tree = after
    return tree


async def verify(db: Database, keys: Sequence[CheckpointVerifier], outside: Sequence[Checkpoint] = ()) -> Report:
    """`outside`: checkpoints copied off the node. Each must be in the database, and the records must match
    it: rolling the log back to an older checkpoint, the later ones deleted, is seen only against such a
    copy."""
    by_id = {k.key_id: k for k in keys}
    report = Report()
    cps = await _checkpoints(db)
    report.checkpoints = len(cps) + len(outside)
    # The head is read before the records: a node appending meanwhile only adds records after it.
    first_head = await _head(db, report)
    head_size, head_root = first_head if first_head is not None else (-1, b"")
    trusted: list[Checkpoint] = []
    prev: Checkpoint | None = None  # the largest so far
    for cp in cps:
        if not _well_formed(cp):
            report.findings.append(
                Finding("malformed", f"checkpoint #{cp.id} holds values of the wrong type or size", checkpoint=cp.id)
            )
            continue
        if _check_signature(cp, by_id, report):
            trusted.append(cp)
        if prev is not None and cp.tree_size < prev.tree_size:
            report.findings.append(
                Finding(
                    "checkpoint_order",
                    f"checkpoint #{cp.id} covers {cp.tree_size} records, fewer than checkpoint #{prev.id} "
                    f"({prev.tree_size})",
                    checkpoint=cp.id,
                )
            )
        if prev is None or cp.tree_size >= prev.tree_size:
            prev = cp
    kept = {(c.tree_size, c.root_hash, c.signature) for c in cps if _well_formed(c)}
    for cp in outside:
        if not _check_signature(cp, by_id, report):
            continue
        trusted.append(cp)
        if (cp.tree_size, cp.root_hash, cp.signature) not in kept:
            report.findings.append(
                Finding(
                    "checkpoint_missing",
                    f"{cp.label} (tree size {cp.tree_size}, {cp.ts}) is not in the database (deleted)",
                    checkpoint=cp.id,
                )
            )
    rows = await archive.archives(db)
    report.archives = len(rows)
    tree = _start(rows, by_id, report)
    report.archived = tree.size
    report.checkpoints_archived = sum(1 for c in trusted if c.tree_size < tree.size)
    pending = sorted((c for c in trusted if c.tree_size >= tree.size), key=lambda c: (c.tree_size, c.id))
    last_good = tree.size
    expected = tree.size + 1
    i = 0
    online: list[int] = []  # records an archive holds, still in the database

    seen_head_root: bytes | None = None  # settle() sets it when the tree reaches the head's size
    last_seq = 0

    def span(first: int, last: int) -> str:
        return f"in record {first}" if first == last else f"between record {first} and record {last}"

    def mismatch(cp: Checkpoint) -> None:
        report.findings.append(
            Finding(
                "checkpoint_mismatch",
                f"{cp.label} (tree size {cp.tree_size}, {cp.ts}) does not match the records: "
                f"they differ from what was signed {span(last_good + 1, cp.tree_size)}",
                seq=last_good + 1,
                checkpoint=cp.id,
            )
        )

    def settle() -> None:
        nonlocal i, last_good, seen_head_root
        if tree.size == head_size:
            seen_head_root = tree.root()
        while i < len(pending) and pending[i].tree_size == tree.size:
            cp = pending[i]
            i += 1
            if cp.root_hash == tree.root():
                report.checkpoints_verified += 1
                last_good = cp.tree_size
            else:
                mismatch(cp)

    settle()  # checkpoints of the empty tree
    async for rec in _records(db):
        number: object = rec.seq  # what the database holds, whatever the model says (SQLite stores any type)
        if not isinstance(number, int):
            report.findings.append(Finding("malformed", f"a record is numbered {str(number)[:40]!r}, not an integer"))
            continue
        if rec.seq < 1:
            report.findings.append(
                Finding("inserted", f"record {rec.seq} is numbered below 1: inserted, never appended", seq=rec.seq)
            )
            continue
        if rec.seq <= report.archived:
            online.append(rec.seq)
            continue
        last_seq = rec.seq
        if rec.seq != expected:
            gap = f"record {expected}" if rec.seq == expected + 1 else f"records {expected} to {rec.seq - 1}"
            report.findings.append(Finding("missing", f"{gap} missing (deleted)", seq=expected))
            expected = rec.seq
        expected += 1
        leaf = leaf_of(rec)
        if leaf != rec.leaf_hash:
            origin = _moved_from(rec)
            if origin is not None:
                report.findings.append(
                    Finding(
                        "moved",
                        f"record {rec.seq} holds the content of record {origin} (reordered)",
                        seq=rec.seq,
                    )
                )
            else:
                report.findings.append(
                    Finding("altered", f"record {rec.seq} ({rec.action}, {rec.ts}) was altered", seq=rec.seq)
                )
        elif not _json_objects(rec):
            report.findings.append(
                Finding(
                    "altered",
                    f"record {rec.seq} ({rec.action}, {rec.ts}) was altered: its request and response are not "
                    "two JSON objects (the text between them was moved)",
                    seq=rec.seq,
                )
            )
        tree.append(leaf)
        report.records += 1
        settle()
    for cp in pending[i:]:
        if cp.tree_size < expected:  # its last record is there: records inside its range were deleted
            mismatch(cp)
            continue
        report.findings.append(
            Finding(
                "truncated",
                f"log truncated: {cp.label} ({cp.ts}) covers {cp.tree_size} records, the log holds {report.records}",
                seq=expected,
                checkpoint=cp.id,
            )
        )
    if online:  # an archive deletes its records in the transaction that records it
        report.findings.append(
            Finding(
                "archived_online",
                f"{span_of(online[0], online[-1])} numbered within the archived records (1 to {report.archived}) "
                f"but in the database ({len(online)} records): inserted",
                seq=online[0],
            )
        )
    report.root_hash = tree.root().hex()
    if first_head is not None and seen_head_root != head_root:
        report.findings.append(Finding("head", head_message(head_size, report.records)))
    # Looked at again after the records: what a running node appended meanwhile is under it now.
    last_head = await _head(db, Report())
    if last_head is not None and last_seq > last_head[0]:
        first = last_head[0] + 1
        report.findings.append(
            Finding(
                "inserted",
                f"{span_of(first, last_seq)} past the append head ({last_head[0]} records): inserted, never "
                "appended (the next append would fail on them)",
                seq=first,
            )
        )
    return report


def span_of(first: int, last: int) -> str:
    return f"record {first} is" if first == last else f"records {first} to {last} are"


def head_message(head_size: int, records: int) -> str:
    if head_size > records:
        return f"the append head counts {head_size} records, the log holds {records}"
    return f"the append head's root over {head_size} records differs from the root of the stored records"


async def _leaves(db: Database, tree_size: int) -> list[bytes]:
    rows = await archive.archives(db)
    if rows:
        raise ValueError(f"records 1 to {rows[-1].last_seq} are archived: a proof needs their files")
    leaves: list[bytes] = []
    async for rec in _records(db):
        if rec.seq > tree_size:
            break
        if rec.seq != len(leaves) + 1:
            raise ValueError(f"record {len(leaves) + 1} is missing: run audit verify")
        if leaf_of(rec) != rec.leaf_hash:
            raise ValueError(f"record {rec.seq} does not match its leaf hash: run audit verify")
        leaves.append(rec.leaf_hash)
    if len(leaves) != tree_size:
        raise ValueError(f"the log holds {len(leaves)} records, fewer than tree size {tree_size}")
    return leaves


async def inclusion_proof(db: Database, seq: int, tree_size: int) -> list[bytes]:
    """RFC 9162 §2.1.3 proof that record `seq` (1-based) is in the tree of the first `tree_size` records."""
    return merkle.inclusion_proof(await _leaves(db, tree_size), seq - 1)


async def consistency_proof(db: Database, old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 §2.1.4 proof that the tree of `old_size` records is a prefix of the `new_size` tree."""
    return merkle.consistency_proof(await _leaves(db, new_size), old_size)


def _loaded(text: str) -> Any:
    """A summary as its JSON value; as the stored text when that is not JSON (a tampered record: shown,
    not a crash of export or search; audit verify names it)."""
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return text


def record_dict(rec: AuditRecord) -> dict[str, Any]:
    return {
        "seq": rec.seq,
        "ts": rec.ts,
        "node": rec.node,
        "author": rec.author,
        "action": rec.action,
        "principal": rec.principal,
        "peer": rec.peer,
        "cid": rec.cid,
        "request": _loaded(rec.request),
        "response": _loaded(rec.response),
        "leaf_hash": rec.leaf_hash.hex(),
    }


async def query(
    db: Database,
    *,
    since: str | None = None,
    until: str | None = None,
    principal: str | None = None,
    action: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Records in sequence order; `since`/`until` compare ISO-8601 UTC timestamps (until exclusive)."""
    stmt = select(AuditRecord).order_by(AuditRecord.seq)
    if since:
        stmt = stmt.where(AuditRecord.ts >= since)
    if until:
        stmt = stmt.where(AuditRecord.ts < until)
    if principal:
        stmt = stmt.where((AuditRecord.principal == principal) | (AuditRecord.author == principal))
    if action:
        stmt = stmt.where(
            # autoescape: "_" in an event name is a character, not LIKE's wildcard
            AuditRecord.action.startswith(action, autoescape=True)
            if action.endswith(".")
            else AuditRecord.action == action
        )
    if limit:
        stmt = stmt.limit(limit)
    async with db.read() as s:
        return [record_dict(r) for r in (await s.execute(stmt)).scalars()]
