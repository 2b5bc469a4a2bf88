"""Message bodies at rest in a mailbox's folders, sealed with the mailbox's data key (AES-256-GCM).

The associated data is "<address>\\0<message id>", so a body copied to another row or mailbox does not
open. Delivery takes the folder's next UID and modseq in the same transaction as the insert, so a
message is either fully delivered (visible with its UID) or not at all. Deliveries outside a caller's
transaction (APPEND) are group-committed on SQLite: those waiting when the write lock comes share one
transaction and its COMMIT, each under a SAVEPOINT of its own.

Relay receipts make a peer's message arrive once. SMTP between operators is at least once: when the
peer's `250` is lost, or the sending node dies before recording it, the sender relays the message again
(RFC 5321 §4.5.4.1, §6.1 ask it to). The receipt (mailbox, SHA-256 of sender, Message-ID and the
content as the peer sent it: the verified inner message, the same whatever the encryption of each
attempt) is taken in the delivery's transaction, so a second copy finds it and is acknowledged without
being stored. A message without a Message-ID takes none, and a peer that reuses a Message-ID for other
content sends another message: only the same bytes are a copy. Receipts are kept `[smtp]
duplicate_window`, longer than any peer's queue keeps a message (RFC 5321 §4.5.4.1 suggests 4-5 days).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from gateway.errors import MssgwError, NotFound
from gateway.store.db import Statements, bound_list
from gateway.store.folders import allocate_uid
from gateway.store.mailboxes import MailboxRepository
from gateway.store.models import utcnow

# Plain SQL (Database.raw_writing / statements): this is every delivery's and APPEND's path.
_ACCOUNT = "SELECT data_key, used_bytes, quota_bytes FROM accounts WHERE address = :address"
_INSERT = (
    "INSERT INTO messages (id, address, folder_id, uid, modseq, flags, internal_date, header_message_id, size,"
    " body, created_at) VALUES (:id, :address, :folder_id, :uid, :modseq, :flags, :internal_date,"
    " :header_message_id, :size, :body, :created_at)"
)


_RECEIPT = (
    "INSERT INTO relay_receipts (address, digest, received_at) VALUES (:address, :digest, :received_at)"
    " ON CONFLICT DO NOTHING RETURNING address"
)


def relay_receipt(sender: str, header_message_id: str | None, content: bytes) -> str | None:
    """The receipt of a message relayed in: its envelope sender (case-folded, as addresses are compared
    here), its Message-ID (exactly: RFC 5322 §3.6.4 gives no case rule) and the SHA-256 of `content`, the
    message as the peer sent it (before this node's trace fields). None without a Message-ID."""
    if not header_message_id:
        return None
    key = hashlib.sha256(f"{sender.lower()}\n{header_message_id.strip()}\n".encode())
    key.update(hashlib.sha256(content).digest())
    return key.hexdigest()


def body_aad(address: str, message_id: str) -> bytes:
    return f"{address}\0{message_id}".encode()


@dataclass(frozen=True)
class Delivered:
    id: str
    folder: str
    uid: int
    modseq: int
    uidvalidity: int


QuotaCheck = Callable[[int, int | None], None]
"""Called with the mailbox's (bytes used, quota_bytes column) before a delivery; raises to refuse it."""


class DeliveryInterrupted(MssgwError):
    """The node stopped before a delivery waiting for its transaction was told its outcome."""


@dataclass
class _Delivery:
    address: str
    body: bytes
    folder: str
    flags: str
    internal_date: datetime | None
    header_message_id: str | None
    quota: QuotaCheck | None
    done: asyncio.Future[Delivered] | None = None  # set for a delivery of its own (group commit)

    def settled(self) -> bool:
        return self.done is None or self.done.done()

    def settle(self, outcome: Delivered | Exception) -> None:
        assert self.done is not None
        if isinstance(outcome, Exception):
            self.done.set_exception(outcome)
        else:
            self.done.set_result(outcome)


GROUP_BYTES = 32 << 20
"""A group commit takes deliveries up to this many octets (at least one): a few 25 MB APPENDs do not
hold the small ones behind them for one long transaction."""


def _take(pending: list[_Delivery]) -> tuple[list[_Delivery], list[_Delivery]]:
    """(the next group, the deliveries left for the one after)."""
    size = 0
    for i, d in enumerate(pending):
        size += len(d.body)
        if size > GROUP_BYTES and i:
            return pending[:i], pending[i:]
    return pending, []


@dataclass
class _Group:
    """One event loop's deliveries waiting for a transaction, and the task that makes them."""

    loop: asyncio.AbstractEventLoop
    pending: list[_Delivery]
    flusher: asyncio.Task[None] = field(init=False)


class MessageStore:
    def __init__(self, mailboxes: MailboxRepository) -> None:
        self.mailboxes = mailboxes
        self.db = mailboxes.db
        self._group: _Group | None = None  # the deliveries waiting for their transaction (SQLite)

    async def deliver(
        self,
        address: str,
        body: bytes,
        *,
        folder: str = "INBOX",
        flags: str = "",
        internal_date: datetime | None = None,
        header_message_id: str | None = None,
        session: AsyncSession | AsyncConnection | Statements | None = None,
        quota: QuotaCheck | None = None,
    ) -> Delivered:
        """Store `body` in `folder`; inside `session` (a transaction) when given: it commits with the caller's
        changes. Without one, on SQLite, deliveries made meanwhile share a transaction and its COMMIT
        (`_flush`); on PostgreSQL each has its own (a group would lock several mailboxes' folder rows in
        arrival order, and deadlock with a delivery to several recipients, which locks them sorted).
        `quota` sees the mailbox's usage first (read with its key, in the same statement)."""
        item = _Delivery(address.lower(), body, folder, flags, internal_date, header_message_id, quota)
        if session is not None:
            return await self._deliver(self.db.statements(session), item)
        if not self.db.is_sqlite:
            async with self.db.raw_writing() as tx:
                return await self._deliver(tx, item)
        if self.db.in_write():  # its transaction would wait for the lock this task holds
            raise RuntimeError("a write transaction is already open in this task: pass its session instead")
        loop = asyncio.get_running_loop()
        item.done = loop.create_future()
        group = self._group
        if group is None or group.loop is not loop or group.flusher.done():
            group = self._group = _Group(loop, [item])
            # A context of its own: not the first caller's (whose contextvars, such as the writer flag,
            # are no business of the others' transaction).
            group.flusher = loop.create_task(self._flush(group), context=contextvars.Context())
        else:
            group.pending.append(item)
        return await item.done

    async def _flush(self, group: _Group) -> None:
        """Group commit: the deliveries waiting once the write lock is ours go into one transaction, each
        under a SAVEPOINT of its own, so that one refused (no such folder, over quota) leaves the others.
        Every APPEND used to wait for the one before it to commit: 5-6 of 8 concurrent APPENDs were
        queued on the writer lock (docs/benchmarks.md, ninth pass). A caller cancelled before its
        delivery's turn stores nothing; one cancelled later finds its message stored, as after any
        cancelled COMMIT."""
        batch: list[_Delivery] = []
        try:
            while group.pending:
                outcomes: list[Delivered | Exception | None] = []
                try:
                    async with self.db.raw_writing() as tx:
                        batch, group.pending = _take(group.pending)  # chosen with the lock held
                        for d in batch:
                            outcomes.append(await self._one(tx, d, alone=len(batch) == 1))
                except Exception as failed:  # the transaction as a whole (BEGIN, its COMMIT, the connection)
                    if not batch:  # it failed before the batch was chosen: the waiting ones are told
                        batch, group.pending = group.pending, []
                    outcomes = [failed] * len(batch)
                for d, outcome in zip(batch, outcomes, strict=True):
                    if outcome is not None and not d.settled():
                        d.settle(outcome)
                batch = []
        finally:  # cancelled (the node stopping): nobody waits for ever, and no CancelledError of ours
            for d in [*batch, *group.pending]:
                if not d.settled():
                    d.settle(DeliveryInterrupted("the node stopped while the message was being stored"))
            group.pending = []

    async def _one(self, tx: Statements, d: _Delivery, *, alone: bool) -> Delivered | Exception | None:
        """One delivery of a group: its outcome, None for a caller gone before its turn."""
        if d.settled():
            return None
        if alone:
            return await self._deliver(tx, d)  # refused: the transaction's rollback undoes it
        await tx.execute("SAVEPOINT delivery", {})
        try:
            outcome: Delivered | Exception = await self._deliver(tx, d)
        except Exception as refused:  # this delivery's own: undone alone, told to its caller
            await tx.execute("ROLLBACK TO delivery", {})
            outcome = refused
        await tx.execute("RELEASE delivery", {})
        return outcome

    async def _deliver(self, tx: Statements, d: _Delivery) -> Delivered:
        message_id = secrets.token_hex(16)
        now = utcnow()
        rows = await tx.execute(_ACCOUNT, {"address": d.address})
        if not rows:
            raise NotFound(f"no local mailbox {d.address}")
        wrapped, used, quota_bytes = rows[0]
        folder_id, uid, modseq, uidvalidity = await allocate_uid(tx, d.address, d.folder)
        if d.quota is not None:  # after the folder is known to exist (APPEND: TRYCREATE before OVERQUOTA)
            d.quota(int(used), quota_bytes)
        sealed = self.mailboxes.kek.unwrap(wrapped, d.address).seal(d.body, body_aad(d.address, message_id))
        await tx.execute(
            _INSERT,
            {
                "id": message_id,
                "address": d.address,
                "folder_id": folder_id,
                "uid": uid,
                "modseq": modseq,
                "flags": d.flags,
                "internal_date": d.internal_date or now,
                "header_message_id": d.header_message_id,
                "size": len(d.body),
                "body": sealed,
                "created_at": now,
            },
        )
        return Delivered(message_id, d.folder, uid, modseq, uidvalidity)

    async def first_receipt(self, tx: Statements, address: str, digest: str) -> bool:
        """Take the receipt `digest` for `address` within `tx`: False when it was taken before (a copy of a
        message delivered already). A concurrent taker on PostgreSQL waits for this transaction's end."""
        rows = await tx.execute(_RECEIPT, {"address": address.lower(), "digest": digest, "received_at": utcnow()})
        return bool(rows)

    async def prune_receipts(self, before: datetime) -> int:
        """Forget the receipts taken before `before`; how many."""
        async with self.db.raw_writing() as tx:
            rows = await tx.execute(
                "DELETE FROM relay_receipts WHERE received_at < :before RETURNING 1", {"before": before}
            )
        return len(rows)

    async def put(self, address: str, body: bytes) -> str:
        """Deliver to INBOX; returns the stored message's id."""
        return (await self.deliver(address, body)).id

    async def get(self, address: str, message_id: str) -> bytes:
        address = address.lower()
        rows = await self.db.rows(  # one statement: the body and the key that opens it
            "SELECT m.body, a.data_key FROM messages m JOIN accounts a ON a.address = m.address"
            " WHERE m.id = :id AND m.address = :address",
            {"id": message_id, "address": address},
        )
        if not rows:
            raise NotFound(f"no message {message_id} in {address}")
        body, wrapped = rows[0]
        return self.mailboxes.kek.unwrap(wrapped, address).open(body, body_aad(address, message_id))

    async def get_many(self, address: str, message_ids: Sequence[str]) -> dict[str, bytes]:
        """The bodies of those of `message_ids` still stored, by id (one statement; keep the list short).
        By id, not by folder and UID: SQLite may give a deleted folder's id to a new one."""
        address = address.lower()
        marks, params = bound_list("m", message_ids)
        params["address"] = address
        sql = (
            "SELECT m.id, m.body, a.data_key"  # noqa: S608 (placeholders only: the ids are bound)
            " FROM messages m JOIN accounts a ON a.address = m.address"
            f" WHERE m.address = :address AND m.id IN ({marks})"
        )
        rows = await self.db.rows(sql, params)
        if not rows:
            return {}
        key = self.mailboxes.kek.unwrap(rows[0][2], address)
        return {str(mid): key.open(body, body_aad(address, mid)) for mid, body, _ in rows}
