"""Audit archives: records past the online retention moved to a signed file, then deleted.

Implementation notes
- Domain brief §8: the trace stays online at least six months (`[audit] keep_online`, 183 days at least,
  up to the 1-3 years an operator may choose); older records may go off line. `archive` writes the
  records after the last archive and before a date to one gzip JSON-lines file: a header (format, node,
  first and last sequence numbers, the tree's compact range before them), one line per record with its
  stored texts exactly as hashed, and a trailer: a checkpoint signed at the last record's tree size and
  the compact range after it. A file therefore verifies on its own (`read_file`): its records appended
  to the range before them give the signed root, which later checkpoints also build on.
- The file is written under a temporary name, synced, read back and verified, then renamed; only then
  is its row (range, compact range, checkpoint, file name and SHA-256) committed, and the records deleted
  in batches so that appends wait at most one batch (the delete trigger of migration a0002 lets a record
  go only once a row covers it). A stop between the two leaves covered records online: `audit verify`
  names them and the next `audit archive` deletes them first.
- `audit verify` continues the tree from the last row's compact range; the rows' checkpoints are
  checked like the others, and checkpoints below the archived size are counted, not recomputed.
- A file holds what the log holds (addresses, client addresses; never content): it is written 0600.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from gateway.audit import merkle
from gateway.audit.checkpoint import CheckpointSigner, CheckpointVerifier, checkpoint_message
from gateway.audit.log import Checkpoint, iso, leaf_of, record_bytes, split_frontier
from gateway.audit.models import AuditArchive, AuditRecord
from gateway.errors import MssgwError
from gateway.store.db import Database

ARCHIVE_FORMAT = "mssgw-audit-archive/1"
LOCK_FILE = ".mssgw-audit-archive.lock"
_BATCH = 5000
_FIELDS = ("seq", "ts", "node", "author", "action", "principal", "peer", "cid", "request", "response")


class ArchiveError(MssgwError):
    """An archive cannot be made, or a file is not a sound archive; the message says which and why."""


@dataclass(frozen=True)
class Archive:
    """One row of `audit_archives`: records first_seq..last_seq, gone off line to `file`."""

    first_seq: int
    last_seq: int
    last_ts: str
    frontier: list[bytes]
    checkpoint: Checkpoint
    file: str
    sha256: str

    @classmethod
    def of(cls, row: AuditArchive) -> Archive:
        cp = Checkpoint(0, row.last_seq, row.root_hash, row.ts, row.node, row.key_id, row.signature)
        return cls(row.first_seq, row.last_seq, row.last_ts, split_frontier(row.frontier), cp, row.file, row.sha256)

    def tree(self) -> merkle.CompactRange:
        """The compact range after its records; ValueError when the stored one cannot be one."""
        return merkle.CompactRange(self.last_seq, self.frontier)

    def as_dict(self) -> dict[str, Any]:
        return {
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "last_ts": self.last_ts,
            "file": self.file,
            "sha256": self.sha256,
            "checkpoint": self.checkpoint.as_dict(),
        }


async def archives(db: Database) -> list[Archive]:
    async with db.read() as s:
        rows = (await s.execute(select(AuditArchive).order_by(AuditArchive.first_seq))).scalars().all()
        return [Archive.of(r) for r in rows]


def base(rows: list[Archive]) -> merkle.CompactRange:
    """Where the online tree starts: the compact range after the last archive (empty without one)."""
    return rows[-1].tree() if rows else merkle.CompactRange()


@dataclass(frozen=True)
class Archived:
    """What `archive` did: the new archive and its file (None when there was nothing to archive), and how
    many records it deleted from the database (an interrupted earlier archive's too)."""

    archive: Archive | None
    path: Path | None
    removed: int

    @property
    def records(self) -> int:
        return self.archive.last_seq - self.archive.first_seq + 1 if self.archive else 0


async def archive(db: Database, signer: CheckpointSigner, node: str, before: str, out_dir: Path) -> Archived:
    """Move the records older than `before` (the log's ISO-8601 UTC form) that no archive holds yet to a
    file in `out_dir`, then delete them. The caller has verified the log. One archive at a time writes to
    a directory (a lock file in it): two would write the same file name. Two in different directories (two
    nodes) race on the database, where one records nothing and removes its file."""
    await _check_delete_right(db)
    try:
        fd = os.open(out_dir / LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ArchiveError(f"{out_dir}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchiveError(f"another mssgw audit archive is writing to {out_dir}") from None
        return await _archive(db, signer, node, before, out_dir)
    finally:
        os.close(fd)  # releases the lock


async def _archive(db: Database, signer: CheckpointSigner, node: str, before: str, out_dir: Path) -> Archived:
    rows = await archives(db)
    try:
        start = base(rows)
    except ValueError as exc:
        raise ArchiveError(f"the last archive's compact range is unreadable ({exc}): run mssgw audit verify") from None
    removed = await _remove(db, start.size)  # what an interrupted archive left
    last, last_ts = await _last_before(db, before)
    if last <= start.size:
        return Archived(None, None, removed)
    first = start.size + 1
    name = f"audit-{first:012d}-{last:012d}.jsonl.gz"
    final, part = out_dir / name, out_dir / (name + ".part")
    tree = merkle.CompactRange(start.size, start.nodes)
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(filename=name.removesuffix(".gz"), mode="wb", fileobj=raw, mtime=0) as out:
                header = {"format": ARCHIVE_FORMAT, "node": node, "first_seq": first, "last_seq": last}
                out.write(_line(header | {"frontier_before": [h.hex() for h in start.nodes]}))
                async for rec in _range(db, first, last):
                    leaf = leaf_of(rec)
                    if rec.seq != tree.size + 1 or leaf != rec.leaf_hash:
                        raise ArchiveError(f"record {tree.size + 1} changed while archiving: run mssgw audit verify")
                    tree.append(leaf)
                    out.write(_line({f: getattr(rec, f) for f in _FIELDS} | {"leaf_hash": leaf.hex()}))
                if tree.size != last:
                    raise ArchiveError(f"record {tree.size + 1} is missing: run mssgw audit verify")
                ts = iso(datetime.now(UTC))
                root = tree.root()
                cp = Checkpoint(
                    0, last, root, ts, node, signer.key_id, signer.sign(checkpoint_message(node, last, root, ts))
                )
                out.write(_line({"checkpoint": cp.as_dict(), "frontier_after": [h.hex() for h in tree.nodes]}))
            raw.flush()
            os.fsync(raw.fileno())
        written = read_file(part, {signer.key_id: signer.verifier})  # what the disk holds, read back
        os.replace(part, final)
        _sync_dir(out_dir)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise ArchiveError(f"{part}: {exc.strerror or exc}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    made = Archive(first, last, last_ts, tree.nodes, cp, name, written.sha256)
    try:
        async with db.write() as s:
            archived_to = (await s.execute(select(func.max(AuditArchive.last_seq)))).scalar_one_or_none() or 0
            if archived_to != start.size:
                raise ArchiveError("another mssgw audit archive ran meanwhile: this one recorded nothing")
            s.add(
                AuditArchive(
                    first_seq=first,
                    last_seq=last,
                    last_ts=last_ts,
                    frontier=b"".join(tree.nodes),
                    root_hash=root,
                    ts=ts,
                    node=node,
                    key_id=signer.key_id,
                    signature=cp.signature,
                    file=name,
                    sha256=written.sha256,
                )
            )
    except (ArchiveError, IntegrityError) as exc:
        final.unlink(missing_ok=True)
        if isinstance(exc, IntegrityError):
            raise ArchiveError("another mssgw audit archive ran meanwhile: this one recorded nothing") from None
        raise
    return Archived(made, final, removed + await _remove(db, last))


async def _check_delete_right(db: Database) -> None:
    """On PostgreSQL the node role may not delete audit records (deploy/postgresql.md): say so before
    anything is written, rather than leave an archive whose records cannot go."""
    if db.is_sqlite:
        return
    async with db.read() as s:
        allowed = (await s.execute(text("SELECT has_table_privilege('audit_records', 'DELETE')"))).scalar_one()
    if not allowed:
        raise ArchiveError(
            "this database role may not delete audit records: run mssgw audit archive with [store] audit_url "
            "naming the audit owner (deploy/postgresql.md)"
        )


async def _last_before(db: Database, before: str) -> tuple[int, str]:
    """The last record of the prefix of the log older than `before`, and its timestamp ((0, "") if none).
    Timestamps never go backwards along the log, so that prefix ends just before the first younger one."""
    async with db.read() as s:
        young: int | None = (
            await s.execute(select(func.min(AuditRecord.seq)).where(AuditRecord.ts >= before))
        ).scalar_one()
        last_q = select(func.max(AuditRecord.seq))
        if young is not None:
            last_q = last_q.where(AuditRecord.seq < young)
        last: int | None = (await s.execute(last_q)).scalar_one()
        if last is None:
            return 0, ""
        ts = (await s.execute(select(AuditRecord.ts).where(AuditRecord.seq == last))).scalar_one()
        return int(last), str(ts)


async def _range(db: Database, first: int, last: int) -> AsyncIterator[AuditRecord]:
    after = first - 1
    while after < last:
        async with db.read() as s:
            stmt = (
                select(AuditRecord)
                .where(AuditRecord.seq > after, AuditRecord.seq <= last)
                .order_by(AuditRecord.seq)
                .limit(_BATCH)
            )
            rows = (await s.execute(stmt)).scalars().all()
        if not rows:
            return
        for r in rows:
            yield r
        after = rows[-1].seq


async def _remove(db: Database, upto: int) -> int:
    """Delete the records numbered up to `upto` (which archives hold), a batch per transaction."""
    removed = 0
    while True:
        try:
            async with db.write() as s:
                low = (await s.execute(select(func.min(AuditRecord.seq)).where(AuditRecord.seq <= upto))).scalar()
                if low is None:
                    return removed
                high = min(upto, int(low) + _BATCH - 1)
                done = await s.execute(delete(AuditRecord).where(AuditRecord.seq >= low, AuditRecord.seq <= high))
                removed += int(done.rowcount or 0)  # type: ignore[attr-defined]
        except DBAPIError as exc:
            raise ArchiveError(f"the audit database refused to delete archived records: {exc.orig}") from None


def _line(value: Mapping[str, Any]) -> bytes:
    # ASCII JSON: every stored text (lone surrogates included, escaped by `storable`) comes back exact.
    return json.dumps(value, separators=(",", ":")).encode("ascii") + b"\n"


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------ reading back


@dataclass(frozen=True)
class ArchiveFile:
    """A file that verified: its range, the signed checkpoint over it, and its SHA-256."""

    path: Path
    node: str
    first_seq: int
    last_seq: int
    frontier_before: list[bytes]
    frontier_after: list[bytes]
    checkpoint: Checkpoint
    sha256: str


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with gzip.open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                value = json.loads(raw)
            except ValueError:
                raise ArchiveError(f"{path.name}: line {number} is not JSON") from None
            if not isinstance(value, dict):
                raise ArchiveError(f"{path.name}: line {number} is not a JSON object")
            yield number, value


def _hashes(value: object, what: str) -> list[bytes]:
    if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
        raise ValueError(f"{what} is not a list of hashes")
    return [bytes.fromhex(h) for h in value]


def _record_leaf(value: dict[str, Any]) -> bytes:
    """The leaf of a record line, recomputed from its fields; ValueError if they are not a record's."""
    seq = value.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise ValueError("seq is not an integer")
    texts: dict[str, str] = {}
    optional: dict[str, str | None] = {}
    for name in _FIELDS[1:]:
        v = value.get(name)
        if name in ("principal", "peer", "cid") and v is None:
            optional[name] = None
        elif not isinstance(v, str):
            raise ValueError(f"{name} is not text")
        elif name in ("principal", "peer", "cid"):
            optional[name] = v
        else:
            texts[name] = v
    if not all(isinstance(json.loads(texts[k]), dict) for k in ("request", "response")):
        raise ValueError("request and response are not JSON objects")  # as verify: only objects join unambiguously
    return merkle.leaf_hash(
        record_bytes(
            seq,
            texts["ts"],
            texts["node"],
            texts["author"],
            texts["action"],
            optional["principal"],
            optional["peer"],
            optional["cid"],
            texts["request"],
            texts["response"],
        )
    )


def read_file(path: Path, keys: Mapping[str, CheckpointVerifier]) -> ArchiveFile:
    """Verify an archive file: its records, appended to the compact range before them, give the root of its
    checkpoint, which one of `keys` signed. ArchiveError names the first problem."""
    try:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        lines = _lines(path)
        number, header = next(lines, (0, {}))
        if header.get("format") != ARCHIVE_FORMAT:
            raise ArchiveError(f"{path.name}: not an audit archive ({ARCHIVE_FORMAT} header missing)")
        first, last, node = header.get("first_seq"), header.get("last_seq"), header.get("node")
        if not (isinstance(first, int) and isinstance(last, int) and isinstance(node, str) and 1 <= first <= last):
            raise ArchiveError(f"{path.name}: the header's range or node is invalid")
        try:
            before = _hashes(header.get("frontier_before"), "frontier_before")
            tree = merkle.CompactRange(first - 1, before)
        except ValueError as exc:
            raise ArchiveError(f"{path.name}: header: {exc}") from None
        trailer: dict[str, Any] | None = None
        for number, value in lines:
            if trailer is not None:
                raise ArchiveError(f"{path.name}: line {number} follows the checkpoint")
            if "checkpoint" in value:
                trailer = value
                continue
            expected = tree.size + 1
            try:
                leaf = _record_leaf(value)
            except ValueError as exc:
                raise ArchiveError(f"{path.name}: line {number} is not a record ({exc})") from None
            if value["seq"] != expected:
                raise ArchiveError(f"{path.name}: line {number} holds record {value['seq']}, not {expected}")
            if value.get("leaf_hash") != leaf.hex():
                raise ArchiveError(f"{path.name}: record {expected} ({value['action']}, {value['ts']}) was altered")
            tree.append(leaf)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"{path.name}: unreadable ({getattr(exc, 'strerror', None) or exc})") from None
    if trailer is None:
        raise ArchiveError(f"{path.name}: truncated: no checkpoint after record {tree.size}")
    if tree.size != last:
        raise ArchiveError(f"{path.name}: holds records {first} to {tree.size}, its header says {last}")
    try:
        cp = Checkpoint.from_dict(trailer["checkpoint"])
        after = _hashes(trailer.get("frontier_after"), "frontier_after")
    except (ValueError, TypeError) as exc:
        raise ArchiveError(f"{path.name}: the closing checkpoint is unreadable ({exc})") from None
    verifier = keys.get(cp.key_id)
    if verifier is None:
        raise ArchiveError(f"{path.name}: its checkpoint is signed by unknown key {cp.key_id}")
    if not verifier.verify(checkpoint_message(cp.node, cp.tree_size, cp.root_hash, cp.ts), cp.signature):
        raise ArchiveError(f"{path.name}: its checkpoint's signature is invalid")
    if cp.tree_size != last or cp.root_hash != tree.root() or after != tree.nodes:
        raise ArchiveError(f"{path.name}: its records do not give the signed root over {cp.tree_size} records")
    return ArchiveFile(path, node, first, last, before, after, cp, digest.hexdigest())
