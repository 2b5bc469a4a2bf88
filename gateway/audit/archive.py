"""Audit archives: records past the online retention moved to a signed file, then deleted.

Implementation notes
- Domain brief §8: the trace stays online at least six months (`[audit] keep_online`, 183 days at least,
  up to the 1-3 years an operator may choose); older records may go off line. `archive` writes the
  records after the last archive and before a date (at most `max_records` a run) to one gzip JSON-lines
  file: a header (format, node, first and last sequence numbers, the tree's compact range before them),
  one line per record with its stored texts exactly as hashed, and a trailer: the archive's signature and
  the compact range after it. A file therefore verifies on its own (`read_file`): its records appended
  to the range before them give the signed root, which later checkpoints also build on.
- The signature covers `archive_message` (range, last record's time, root, time of the archive): a format
  of its own, so that a periodic checkpoint, which anyone reading the database has, cannot pass for an
  archive and let records be deleted.
- The file is written under a temporary name, synced, read back and verified, then renamed; then one
  transaction records the archive (range, compact range, signature, file name and SHA-256) and deletes its
  records (the delete trigger of migration a0002 lets a record go only once a row covers it). One
  transaction, so that no record an archive holds can legitimately remain online: `audit verify` reports
  any as inserted. SQLite deletes about 200,000 records a second; `max_records` bounds how long nodes'
  appends wait (their busy timeout is 10 s). A stop between the rename and the commit leaves a file no row
  records: the next run finds it, checks it against the records and reuses it rather than writing another
  file of the same name.
- `audit verify` continues the tree from the last archive's compact range; checkpoints below it are
  counted, not recomputed.
- A file holds what the log holds (addresses, client addresses; never content): it is written 0600.
- `read_file` accepts only what `archive` writes: each line must be the canonical JSON of its value (no
  duplicate key, no other spacing or encoding), with exactly the expected keys and integer numbers. Any
  other input is an ArchiveError naming the line, never another exception.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import fcntl
import gzip
import hashlib
import json
import os
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from gateway.audit import merkle
from gateway.audit.checkpoint import ARCHIVE_FORMAT, CheckpointSigner, CheckpointVerifier, archive_message
from gateway.audit.log import iso, leaf_of, record_bytes, split_frontier
from gateway.audit.models import AuditArchive, AuditRecord
from gateway.errors import MssgwError
from gateway.store.db import Database

LOCK_FILE = ".mssgw-audit-archive.lock"
MAX_RECORDS = 500_000
"""Records one run archives at most (their deletion holds SQLite's write lock about 2.5 s)."""
MAX_LINE = 1 << 20  # a record's line: two summaries of at most 4,096 octets, escaped, and short fields
_BATCH = 5000
_FIELDS = ("seq", "ts", "node", "author", "action", "principal", "peer", "cid", "request", "response")
_OPTIONAL = ("principal", "peer", "cid")
_HEADER = ("format", "node", "first_seq", "last_seq", "frontier_before")
_SIGNED = ("node", "first_seq", "last_seq", "last_ts", "root_hash", "ts", "key_id", "signature")


class ArchiveError(MssgwError):
    """An archive cannot be made, or a file is not a sound archive; the message says which and why."""


@dataclass(frozen=True)
class Archive:
    """An archive of records first_seq..last_seq: the compact range after them and the signature over
    `archive_message`. A row of `audit_archives`, or a file's trailer."""

    first_seq: int
    last_seq: int
    last_ts: str
    frontier: list[bytes]
    root_hash: bytes
    ts: str
    node: str
    key_id: str
    signature: bytes
    file: str
    sha256: str

    @classmethod
    def of(cls, row: AuditArchive) -> Archive:
        return cls(
            row.first_seq,
            row.last_seq,
            row.last_ts,
            split_frontier(row.frontier) if isinstance(row.frontier, bytes) else [],
            row.root_hash,
            row.ts,
            row.node,
            row.key_id,
            row.signature,
            row.file,
            row.sha256,
        )

    def well_formed(self) -> bool:
        """Whether the stored values have the types and sizes an archive's have (SQLite stores any type)."""
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.first_seq, self.last_seq))
        texts = all(isinstance(v, str) for v in (self.last_ts, self.ts, self.node, self.key_id, self.file))
        blobs = isinstance(self.root_hash, bytes) and len(self.root_hash) == 32 and isinstance(self.signature, bytes)
        return ints and texts and blobs and 1 <= self.first_seq <= self.last_seq

    def message(self) -> bytes:
        return archive_message(self.node, self.first_seq, self.last_seq, self.last_ts, self.root_hash, self.ts)

    def signed_by(self, keys: Mapping[str, CheckpointVerifier]) -> str | None:
        """None when one of `keys` signed it; else why not."""
        verifier = keys.get(self.key_id)
        if verifier is None:
            return f"signed by unknown key {self.key_id}"
        if not verifier.verify(self.message(), self.signature):
            return "its signature is invalid"
        return None

    def tree(self) -> merkle.CompactRange:
        """The compact range after its records; ValueError when the stored one cannot be one."""
        return merkle.CompactRange(self.last_seq, self.frontier)

    def signed_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "last_ts": self.last_ts,
            "root_hash": self.root_hash.hex(),
            "ts": self.ts,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode(),
        }

    def as_dict(self) -> dict[str, Any]:
        return self.signed_dict() | {"file": self.file, "sha256": self.sha256}


async def archives(db: Database) -> list[Archive]:
    async with db.read() as s:
        rows = (await s.execute(select(AuditArchive).order_by(AuditArchive.first_seq))).scalars().all()
        return [Archive.of(r) for r in rows]


@dataclass(frozen=True)
class Archived:
    """What `archive` did: the new archive and its file, or None when there was nothing to archive."""

    archive: Archive | None
    path: Path | None
    reused: bool = False  # the file an interrupted run left, checked and recorded

    @property
    def records(self) -> int:
        return self.archive.last_seq - self.archive.first_seq + 1 if self.archive else 0


async def archive(
    db: Database,
    signer: CheckpointSigner,
    node: str,
    before: str,
    out_dir: Path,
    *,
    max_records: int = MAX_RECORDS,
) -> Archived:
    """Move the records older than `before` (the log's ISO-8601 UTC form) that no archive holds yet, at
    most `max_records`, to a file in `out_dir`, then delete them. The caller has verified the log. One
    archive at a time writes to a directory (a lock file in it): two would write the same file name. Two in
    different directories (two nodes) race on the database, where one records nothing and removes its file."""
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
        return await _archive(db, signer, node, before, out_dir, max_records)
    finally:
        os.close(fd)  # releases the lock


async def _archive(
    db: Database, signer: CheckpointSigner, node: str, before: str, out_dir: Path, max_records: int
) -> Archived:
    rows = await archives(db)
    try:
        start = rows[-1].tree() if rows else merkle.CompactRange()
    except ValueError as exc:
        raise ArchiveError(f"the last archive's compact range is unreadable ({exc}): run mssgw audit verify") from None
    last, last_ts = await _last_before(db, before, start.size + max_records)
    if last <= start.size:
        return Archived(None, None)
    first = start.size + 1
    name = f"audit-{first:012d}-{last:012d}.jsonl.gz"
    final, part = out_dir / name, out_dir / (name + ".part")
    keys = {signer.key_id: signer.verifier}
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
                message = archive_message(node, first, last, last_ts, root, ts)
                made = Archive(
                    first, last, last_ts, tree.nodes, root, ts, node, signer.key_id, signer.sign(message), name, ""
                )
                out.write(_line({"archive": made.signed_dict(), "frontier_after": [h.hex() for h in tree.nodes]}))
            raw.flush()
            os.fsync(raw.fileno())
        written = read_file(part, keys)  # what the disk holds, read back
        reused = _left_over(final, keys, root)
        if reused is not None:  # an interrupted run's file, of these very records: recorded as it is
            part.unlink()
            written = reused
        else:
            os.replace(part, final)
            _sync_dir(out_dir)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise ArchiveError(f"{part}: {exc.strerror or exc}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    made = dataclasses.replace(written.archive, file=name)  # read back as the .part file
    try:
        await _record(db, made, start.size)
    except (ArchiveError, IntegrityError) as exc:
        if reused is None:
            final.unlink(missing_ok=True)
        if isinstance(exc, IntegrityError):
            raise ArchiveError("another mssgw audit archive ran meanwhile: this one recorded nothing") from None
        raise
    return Archived(made, final, reused is not None)


def _left_over(final: Path, keys: Mapping[str, CheckpointVerifier], root: bytes) -> ArchiveFile | None:
    """The file of this name an interrupted run renamed but did not record, if it is sound and holds the
    records just read (the same root); None otherwise (it is then replaced)."""
    if not final.exists():
        return None
    try:
        found = read_file(final, keys)
    except ArchiveError:
        return None
    return found if found.archive.root_hash == root else None


async def _record(db: Database, made: Archive, archived_to: int) -> None:
    """Record the archive and delete its records, in one transaction."""
    try:
        async with db.write() as s:
            now = (await s.execute(select(func.max(AuditArchive.last_seq)))).scalar_one_or_none() or 0
            if now != archived_to:
                raise ArchiveError("another mssgw audit archive ran meanwhile: this one recorded nothing")
            s.add(
                AuditArchive(
                    first_seq=made.first_seq,
                    last_seq=made.last_seq,
                    last_ts=made.last_ts,
                    frontier=b"".join(made.frontier),
                    root_hash=made.root_hash,
                    ts=made.ts,
                    node=made.node,
                    key_id=made.key_id,
                    signature=made.signature,
                    file=made.file,
                    sha256=made.sha256,
                )
            )
            await s.flush()  # the row first: the delete trigger looks for it
            await s.execute(delete(AuditRecord).where(AuditRecord.seq <= made.last_seq))
    except IntegrityError:
        raise
    except DBAPIError as exc:
        raise ArchiveError(f"the audit database refused the archive: {exc.orig}") from None


async def _check_delete_right(db: Database) -> None:
    """On PostgreSQL the node role may not delete audit records (deploy/postgresql.md): say so before
    anything is written."""
    if db.is_sqlite:
        return
    async with db.read() as s:
        allowed = (await s.execute(text("SELECT has_table_privilege('audit_records', 'DELETE')"))).scalar_one()
    if not allowed:
        raise ArchiveError(
            "this database role may not delete audit records: run mssgw audit archive with [store] audit_url "
            "naming the audit owner (deploy/postgresql.md)"
        )


async def _last_before(db: Database, before: str, at_most: int) -> tuple[int, str]:
    """The last record, numbered `at_most` at most, of the prefix of the log older than `before`, and its
    timestamp ((0, "") if none). Timestamps never go backwards along the log, so that prefix ends just
    before the first younger record."""
    async with db.read() as s:
        young: int | None = (
            await s.execute(select(func.min(AuditRecord.seq)).where(AuditRecord.ts >= before))
        ).scalar_one()
        last_q = select(func.max(AuditRecord.seq)).where(AuditRecord.seq <= at_most)
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
    """A file that verified: its range, the compact range before it, its archive and its SHA-256."""

    path: Path
    frontier_before: list[bytes]
    archive: Archive

    @property
    def sha256(self) -> str:
        return self.archive.sha256


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a key appears twice")
    return dict(pairs)


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The file's lines as JSON objects, each checked to be exactly how `archive` writes its value."""
    with gzip.open(path, "rb") as f:
        number = 0
        while raw := f.readline(MAX_LINE + 1):
            number += 1
            if len(raw) > MAX_LINE:
                raise ArchiveError(f"{path.name}: line {number} is longer than {MAX_LINE} octets")
            try:
                value = json.loads(raw.decode("ascii"), object_pairs_hook=_unique)
            except (ValueError, RecursionError) as exc:
                raise ArchiveError(f"{path.name}: line {number} is not JSON as archives write it ({exc})") from None
            if not isinstance(value, dict) or _line(value) != raw:
                raise ArchiveError(f"{path.name}: line {number} is not JSON as archives write it")
            yield number, value


def _number(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer")
    return value


def _hashes(value: object, what: str) -> list[bytes]:
    if not isinstance(value, list) or not all(isinstance(h, str) and len(h) == 64 for h in value):
        raise ValueError(f"{what} is not a list of hashes")
    return [bytes.fromhex(h) for h in value]


def _record_leaf(value: dict[str, Any]) -> bytes:
    """The leaf of a record line, recomputed from its fields; ValueError if they are not a record's."""
    if set(value) != {*_FIELDS, "leaf_hash"}:
        raise ValueError("its keys are not a record's")
    seq = _number(value["seq"])
    texts: dict[str, str] = {}
    optional: dict[str, str | None] = {}
    for name in _FIELDS[1:]:
        v = value[name]
        if name in _OPTIONAL and (v is None or isinstance(v, str)):
            optional[name] = v
        elif isinstance(v, str):
            texts[name] = v
        else:
            raise ValueError(f"{name} is not text")
    for k in ("request", "response"):  # as verify: only two JSON objects join unambiguously
        if not isinstance(json.loads(texts[k]), dict):
            raise ValueError(f"{k} is not a JSON object")
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


def _signed(value: object, name: str, sha256: str) -> Archive:
    """The trailer's archive; ValueError (or TypeError) if it is not one."""
    if not isinstance(value, dict) or set(value) != set(_SIGNED):
        raise ValueError("its keys are not an archive's")
    texts = [value[k] for k in ("last_ts", "ts", "node", "key_id")]
    if not all(isinstance(v, str) for v in texts):
        raise ValueError("a text field is not text")
    return Archive(
        _number(value["first_seq"]),
        _number(value["last_seq"]),
        value["last_ts"],
        [],
        bytes.fromhex(value["root_hash"]),
        value["ts"],
        value["node"],
        value["key_id"],
        base64.b64decode(value["signature"], validate=True),
        name,
        sha256,
    )


def read_file(path: Path, keys: Mapping[str, CheckpointVerifier]) -> ArchiveFile:
    """Verify an archive file: its records, appended to the compact range before them, give the root its
    signature covers, made by one of `keys`. ArchiveError names the first problem, whatever the input."""
    try:
        return _read(path, keys)
    except ArchiveError:
        raise
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ArchiveError(f"{path.name}: unreadable ({getattr(exc, 'strerror', None) or exc})") from None


def _read(path: Path, keys: Mapping[str, CheckpointVerifier]) -> ArchiveFile:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    lines = _lines(path)
    _, header = next(lines, (0, {}))
    if header.get("format") != ARCHIVE_FORMAT or set(header) != set(_HEADER):
        raise ArchiveError(f"{path.name}: not an audit archive ({ARCHIVE_FORMAT} header missing)")
    try:
        first, last = _number(header["first_seq"]), _number(header["last_seq"])
        if not (isinstance(header["node"], str) and 1 <= first <= last):
            raise ValueError("the range or node is invalid")
        before = _hashes(header["frontier_before"], "frontier_before")
        tree = merkle.CompactRange(first - 1, before)
    except ValueError as exc:
        raise ArchiveError(f"{path.name}: header: {exc}") from None
    trailer: dict[str, Any] | None = None
    last_ts = ""
    for number, value in lines:
        if trailer is not None:
            raise ArchiveError(f"{path.name}: line {number} follows the signature")
        if "archive" in value:
            trailer = value
            continue
        expected = tree.size + 1
        try:
            leaf = _record_leaf(value)
        except (ValueError, TypeError, RecursionError) as exc:
            raise ArchiveError(f"{path.name}: line {number} is not a record ({exc})") from None
        if value["seq"] != expected:
            raise ArchiveError(f"{path.name}: line {number} holds record {value['seq']}, not {expected}")
        if value["leaf_hash"] != leaf.hex():
            raise ArchiveError(f"{path.name}: record {expected} ({value['action']}, {value['ts']}) was altered")
        tree.append(leaf)
        last_ts = value["ts"]
    if trailer is None:
        raise ArchiveError(f"{path.name}: truncated: no signature after record {tree.size}")
    if tree.size != last:
        raise ArchiveError(f"{path.name}: holds records {first} to {tree.size}, its header says {last}")
    try:
        if set(trailer) != {"archive", "frontier_after"}:
            raise ValueError("its keys are not a trailer's")
        signed = _signed(trailer["archive"], path.name, digest.hexdigest())
        after = _hashes(trailer["frontier_after"], "frontier_after")
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ArchiveError(f"{path.name}: the closing signature is unreadable ({exc})") from None
    why = signed.signed_by(keys)
    if why is not None:
        raise ArchiveError(f"{path.name}: {why}")
    if (signed.first_seq, signed.last_seq, signed.node, signed.last_ts) != (first, last, header["node"], last_ts):
        raise ArchiveError(f"{path.name}: its signature covers another range or node than its header")
    if signed.root_hash != tree.root() or after != tree.nodes:
        raise ArchiveError(f"{path.name}: its records do not give the signed root over {last} records")
    made = Archive(first, last, signed.last_ts, after, signed.root_hash, signed.ts, signed.node, signed.key_id,
                   signed.signature, path.name, signed.sha256)  # fmt: skip
    return ArchiveFile(path, before, made)
