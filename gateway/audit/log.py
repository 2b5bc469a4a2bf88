"""The durable, tamper-evident audit log: append records, write signed checkpoints.

Implementation notes
- `record()` returns only once its record is committed (group commit: concurrent callers share one
  transaction), so an action reported done is audited even if the process dies right after.
- Appends serialise on the single `audit_head` row (FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on
  SQLite); the head holds the RFC 9162 compact range, so each append costs O(log n) hashes and a
  checkpoint needs no scan.
- Sequence numbers start at 1 and have no gaps; timestamps never go backwards within the log.
- A record's leaf is SHA-256(0x00 || record_bytes(...)), where record_bytes is a canonical JSON array
  of every stored field, the sequence number included (so moving a record is detected).
- Request and response summaries are JSON objects, secret-named keys redacted, each capped in size:
  they describe the action and never carry message content.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from gateway.audit import merkle, oplog
from gateway.audit.checkpoint import CheckpointSigner, checkpoint_message
from gateway.audit.events import AuditEvent
from gateway.audit.models import AuditCheckpoint, AuditHead, AuditRecord
from gateway.audit.oplog import get_logger, scrub
from gateway.store.db import Database

AUDIT_MIGRATIONS = Path(__file__).parent / "migrations"
AUDIT_HEAD = "a0002"
"""Head revision of the audit schema; tests keep it equal to alembic's head."""
RECORD_FORMAT = "mssgw-audit/1"
MAX_SUMMARY = 4096
"""Bytes allowed for each of a record's request and response summaries."""


def _default(o: object) -> str:
    if isinstance(o, Enum):
        return str(o.value)
    if isinstance(o, Path | datetime):
        return str(o)
    if isinstance(o, bytes):
        return o.hex()
    raise TypeError(f"audit summaries hold JSON values, not {type(o).__name__}")


def canonical_json(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default
    )


def storable(text: str) -> str:
    """`text` as both databases store it: a lone surrogate (a client's undecodable octets, kept by
    `surrogateescape`) and NUL (which PostgreSQL's text refuses) written as escapes. One such value in
    a group commit would otherwise fail every record of the group."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode()
    return text


def summary(value: Mapping[str, Any] | None) -> str:
    text = canonical_json(scrub(dict(value or {})))
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SUMMARY:
        text = canonical_json({"truncated": True, "keys": sorted(value or {})})
    # JSON escapes NUL itself; a lone surrogate becomes the JSON escape \udcxx, the same string once read.
    return storable(text)


def record_bytes(
    seq: int,
    ts: str,
    node: str,
    author: str,
    action: str,
    principal: str | None,
    peer: str | None,
    cid: str | None,
    request: str,
    response: str,
) -> bytes:
    """The exact bytes a record's leaf hash covers; `request`/`response` are stored canonical JSON."""
    head = canonical_json([RECORD_FORMAT, seq, ts, node, author, action, principal, peer, cid])
    return f"{head[:-1]},{request},{response}]".encode()


def leaf_of(rec: AuditRecord, seq: int | None = None) -> bytes:
    return merkle.leaf_hash(
        record_bytes(
            rec.seq if seq is None else seq,
            rec.ts,
            rec.node,
            rec.author,
            rec.action,
            rec.principal,
            rec.peer,
            rec.cid,
            rec.request,
            rec.response,
        )
    )


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def split_frontier(blob: bytes) -> list[bytes]:
    return [blob[i : i + 32] for i in range(0, len(blob), 32)]


@dataclass(frozen=True)
class Checkpoint:
    id: int
    tree_size: int
    root_hash: bytes
    ts: str
    node: str
    key_id: str
    signature: bytes
    outside: bool = False  # a copy kept off the database (`audit verify --checkpoint`), not a row

    @classmethod
    def of(cls, row: AuditCheckpoint) -> Checkpoint:
        return cls(row.id, row.tree_size, row.root_hash, row.ts, row.node, row.key_id, row.signature)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Checkpoint:
        """A copy kept elsewhere, as `as_dict` wrote it (the operational log's checkpoint lines, or
        `mssgw audit checkpoint --json`); ValueError if it is not one."""
        try:
            cp = cls(
                int(d.get("id", 0)),
                int(d["tree_size"]),
                bytes.fromhex(d["root_hash"]),
                str(d["ts"]),
                str(d["node"]),
                str(d["key_id"]),
                base64.b64decode(d["signature"], validate=True),
                outside=True,
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ValueError(f"not a checkpoint ({type(exc).__name__}: {exc})") from None
        if cp.tree_size < 0 or len(cp.root_hash) != merkle.HASH_SIZE:
            raise ValueError("not a checkpoint (tree size or root hash out of range)")
        return cp

    @property
    def label(self) -> str:
        return f"checkpoint #{self.id}" + (" (kept outside)" if self.outside else "")

    def as_dict(self) -> dict[str, Any]:
        # The signature too: a copy kept off the node (the operational log) can then be checked on its own.
        return {
            "id": self.id,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "ts": self.ts,
            "node": self.node,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode(),
        }


@dataclass
class _Pending:
    action: str
    author: str
    principal: str | None
    peer: str | None
    cid: str | None
    request: str
    response: str
    done: asyncio.Future[int]


# An append runs these for every audited action: plain SQL through Database.raw_writing().
_HEAD = "SELECT size, frontier FROM audit_head WHERE id = 1"
_LAST_TS = "SELECT ts FROM audit_records WHERE seq = :seq"
_INSERT = (
    "INSERT INTO audit_records (seq, ts, node, author, action, principal, peer, cid, request, response, "
    "leaf_hash) VALUES (:seq, :ts, :node, :author, :action, :principal, :peer, :cid, :request, :response, "
    ":leaf_hash)"
)
_HEAD_MOVE = "UPDATE audit_head SET size = :size, frontier = :frontier WHERE id = 1"


class AuditLog:
    """Appends records to the audit database and signs checkpoints over them."""

    def __init__(
        self, db: Database, node: str, signer: CheckpointSigner | None, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.db = db
        self.clock = clock or (lambda: datetime.now(UTC))  # tests write records of other times
        self.node = node
        self.signer = signer
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._last_ts = ""
        self._appended = -1  # the head's size after this log's last append
        self._bound = {"component": "audit", "node": node}  # the fields of this log's operational lines
        self._log = get_logger(**self._bound)

    async def record(
        self,
        event: AuditEvent,
        *,
        author: str,
        principal: str | None = None,
        peer: str | None = None,
        cid: str | None = None,
        request: Mapping[str, Any] | None = None,
        response: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one record; returns its sequence number once it is committed."""
        if not isinstance(event, AuditEvent):
            raise TypeError("audit events come from the AuditEvent vocabulary")
        req, resp = summary(request), summary(response)
        author = storable(author)
        principal, peer, cid = (None if v is None else storable(v) for v in (principal, peer, cid))
        loop = asyncio.get_running_loop()
        item = _Pending(str(event), author, principal, peer, cid, req, resp, loop.create_future())
        self._pending.append(item)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        seq = await item.done
        fields = {"seq": seq, "author": author, "principal": principal, "peer": peer, "cid": cid}
        oplog.raw_line(str(event), self._bound | fields, {"request": req, "response": resp})
        return seq

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                first = await self._append(batch)
            except BaseException as exc:
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for i, p in enumerate(batch):
                if not p.done.done():  # a caller cancelled while waiting: its record is committed all the same
                    p.done.set_result(first + i)

    async def _append(self, batch: list[_Pending]) -> int:
        # One append per audited action makes this one of the hottest transactions.
        async with self.db.raw_writing() as tx:
            ((size, frontier),) = await tx.execute(_HEAD + tx.for_update, {})
            tree = merkle.CompactRange(size, split_frontier(frontier))
            first = size + 1
            if size and size != self._appended:
                # Another process (an admin command, another node) appended last: continue from its
                # timestamp so the log's time never goes backwards, even if clocks differ.
                last = await tx.execute(_LAST_TS, {"seq": size})
                self._last_ts = last[0][0] if last else ""
            rows = []
            for p in batch:
                seq = tree.size + 1
                ts = max(iso(self.clock()), self._last_ts)
                self._last_ts = ts
                leaf = merkle.leaf_hash(
                    record_bytes(
                        seq,
                        ts,
                        self.node,
                        p.author,
                        p.action,
                        p.principal,
                        p.peer,
                        p.cid,
                        p.request,
                        p.response,
                    )
                )
                tree.append(leaf)
                rows.append(
                    {
                        "seq": seq,
                        "ts": ts,
                        "node": self.node,
                        "author": p.author,
                        "action": p.action,
                        "principal": p.principal,
                        "peer": p.peer,
                        "cid": p.cid,
                        "request": p.request,
                        "response": p.response,
                        "leaf_hash": leaf,
                    }
                )
            await tx.execute(_INSERT, rows)
            await tx.execute(_HEAD_MOVE, {"size": tree.size, "frontier": b"".join(tree.nodes)})
        self._appended = tree.size
        return int(first)

    async def flush(self) -> None:
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def checkpoint(self, *, force: bool = False) -> Checkpoint | None:
        """Sign the current tree head; None when nothing was appended since the last checkpoint."""
        if self.signer is None:
            raise RuntimeError("this audit log has no checkpoint key")
        await self.flush()
        async with self.db.write() as s:
            head = (await s.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update())).scalar_one()
            last = (
                await s.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1))
            ).scalar_one_or_none()
            if last is not None and last.tree_size == head.size and not force:
                return None
            root = merkle.CompactRange(head.size, split_frontier(head.frontier)).root()
            ts = max(iso(self.clock()), last.ts if last else "")
            sig = self.signer.sign(checkpoint_message(self.node, head.size, root, ts))
            row = AuditCheckpoint(
                tree_size=head.size,
                root_hash=root,
                ts=ts,
                node=self.node,
                key_id=self.signer.key_id,
                signature=sig,
            )
            s.add(row)
            await s.flush()
            cp = Checkpoint.of(row)
        self._log.info(str(AuditEvent.AUDIT_CHECKPOINT_WRITTEN), **cp.as_dict())
        return cp

    async def size(self) -> int:
        async with self.db.read() as s:
            return int((await s.execute(select(AuditHead.size).where(AuditHead.id == 1))).scalar_one())

    async def latest_checkpoint(self) -> Checkpoint | None:
        async with self.db.read() as s:
            row = (
                await s.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1))
            ).scalar_one_or_none()
            return Checkpoint.of(row) if row else None

    async def count(self) -> int:
        async with self.db.read() as s:
            return int((await s.execute(select(func.count()).select_from(AuditRecord))).scalar_one())

    async def run_checkpoints(self, interval: float) -> None:
        """Periodic checkpoints while the node serves (cancel the task to stop)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.checkpoint()
            except Exception:
                self._log.exception("audit checkpoint failed")
