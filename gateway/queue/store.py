"""The durable queue: accepted messages and their recipients until each is delivered or given up.

Implementation notes
- `enqueue` writes the message and all its recipients in one transaction; it returns only after the
  commit (SQLite synchronous=FULL, PostgreSQL's default synchronous_commit), so a `250` sent after it
  never loses a message, and a crash before it leaves nothing (no partial message is ever visible).
- Bodies are sealed with the KEK (AES-256-GCM, AAD = "queue\\0" + id): the queue holds health data too.
- Work is claimed per recipient with a lease (`lease_owner`, `lease_until`): a claim takes due, pending
  recipients whose lease is free or expired (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's write
  transactions are serialised). A worker that dies mid-delivery loses its lease, and the recipient
  becomes due again for any worker: delivery is at least once, and the local delivery path makes it
  exactly once by recording delivery and mailbox insert in one transaction.
- A message row leaves the queue when its last recipient reaches a final state (delivered, relayed,
  failed), in the transaction that records that state (`settle`): were it a later step, a crash in
  between would leave a finished message and its sealed body in the queue for good. Or by an
  operator's audited `mssgw queue delete`.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import defer

from directory.addresses import domain_of
from gateway.errors import NotFound
from gateway.store.crypto import DecryptionError, KeyEncryptionKey
from gateway.store.db import Database, Statements, bound_list, utc_datetime
from gateway.store.models import QueuedMessage, QueuedRecipient, utcnow

_MESSAGES = cast(Table, QueuedMessage.__table__)
_RECIPIENTS = cast(Table, QueuedRecipient.__table__)

FINAL = ("delivered", "relayed", "failed")

# Plain SQL (Database.raw_writing / statements): every queued message goes through these.
_ENQUEUE = (
    "INSERT INTO queue_messages (id, source, sender, principal, peer, header_message_id, receipt, final_notice,"
    " size, body, created_at) VALUES (:id, :source, :sender, :principal, :peer, :header_message_id, :receipt,"
    " :final_notice, :size, :body, :created_at)"
)
_ENQUEUE_RECIPIENT = (
    "INSERT INTO queue_recipients (message_id, recipient, domain, local, status, attempts, next_attempt_at,"
    " updated_at) VALUES (:message_id, :recipient, :domain, :local, 'pending', 0, :now, :now)"
)
# The outcome, provided the caller still holds the lease (RETURNING: one row, or none when it was lost).
# A retry time or an error, when given, replace the ones recorded.
_SETTLE = (
    "UPDATE queue_recipients SET status = :status, attempts = :attempts, lease_owner = NULL,"
    " lease_until = NULL, updated_at = :now, last_error = coalesce(:error, last_error),"
    " next_attempt_at = coalesce(:retry_at, next_attempt_at)"
    " WHERE id = :id AND status = 'pending' AND lease_owner = :owner RETURNING id"
)
# A worker's claim: due recipients whose lease is free or expired, then leased, then read with their
# message's envelope (not its body).
_CLAIMABLE = (
    "SELECT id, domain FROM queue_recipients WHERE status = 'pending' AND next_attempt_at <= :now"
    " AND (lease_until IS NULL OR lease_until < :now){busy} ORDER BY next_attempt_at, id LIMIT :limit"
)
_LEASE = "UPDATE queue_recipients SET lease_owner = :owner, lease_until = :until WHERE id IN ({marks})"
_CLAIMED = (
    "SELECT r.id, r.recipient, r.domain, r.local, r.attempts, m.id, m.source, m.sender, m.principal, m.peer,"
    " m.header_message_id, m.size, m.created_at, m.receipt, m.final_notice FROM queue_recipients r"
    " JOIN queue_messages m"
    " ON m.id = r.message_id WHERE r.id IN ({marks}) ORDER BY r.id"
)
_OPEN = (
    "SELECT count(*) FROM queue_recipients WHERE message_id = :id AND status NOT IN ('delivered', 'relayed', 'failed')"
)


class LeaseLost(Exception):
    """The recipient's lease went to another worker: this worker's outcome must not be recorded."""


def _aad(queue_id: str) -> bytes:
    return b"queue\0" + queue_id.encode()


@dataclass(frozen=True)
class Envelope:
    queue_id: str
    source: str
    sender: str
    principal: str | None
    peer: str | None
    header_message_id: str | None
    size: int
    created_at: datetime
    receipt: str | None = None  # relayed in: the receipt its deliveries take (gateway.store.messages)
    final_notice: bool = False  # relayed in: its sender asked for the dispatched MDN (gateway.queue.mdn)


@dataclass(frozen=True)
class Job:
    """One claimed recipient of a queued message."""

    recipient_id: int
    recipient: str
    domain: str
    local: bool
    attempts: int
    envelope: Envelope
    owner: str  # the lease holder that claimed it


@dataclass
class Claim:
    """The recipients a worker holds, grouped by message."""

    jobs: list[Job] = field(default_factory=list)
    more: bool = False
    """Due recipients may be left: the claim reached its limit, or a domain was at its cap."""

    def by_message(self) -> dict[str, list[Job]]:
        out: dict[str, list[Job]] = {}
        for job in self.jobs:
            out.setdefault(job.envelope.queue_id, []).append(job)
        return out


def _envelope(m: QueuedMessage) -> Envelope:
    return Envelope(
        m.id,
        m.source,
        m.sender,
        m.principal,
        m.peer,
        m.header_message_id,
        m.size,
        m.created_at,
        m.receipt,
        m.final_notice,
    )


class Queue:
    def __init__(self, db: Database, kek: KeyEncryptionKey) -> None:
        self.db = db
        self.kek = kek

    async def enqueue(
        self,
        *,
        source: str,
        sender: str,
        recipients: Sequence[str],
        body: bytes,
        local_domains: Iterable[str],
        principal: str | None = None,
        peer: str | None = None,
        header_message_id: str | None = None,
        receipt: str | None = None,
        final_notice: bool = False,
        session: AsyncSession | Statements | None = None,
    ) -> str:
        """Commit a message and its recipients durably (or add them to `session`); returns the queue id."""
        if not recipients:
            raise ValueError("a queued message needs at least one recipient")
        local = {d.lower() for d in local_domains}
        queue_id = secrets.token_hex(16)
        now = utcnow()
        async with self.db.joined(session) as tx:
            # Plain SQL: every accepted message that leaves the node comes here.
            await tx.execute(
                _ENQUEUE,
                {
                    "id": queue_id,
                    "source": source,
                    "sender": sender,
                    "principal": principal,
                    "peer": peer,
                    "header_message_id": header_message_id,
                    "receipt": receipt,
                    "final_notice": final_notice,
                    "size": len(body),
                    "body": self.kek.seal(body, _aad(queue_id)),
                    "created_at": now,
                },
            )
            await tx.execute(
                _ENQUEUE_RECIPIENT,
                [
                    {
                        "message_id": queue_id,
                        "recipient": r,
                        "domain": domain_of(r),
                        "local": domain_of(r) in local,
                        "now": now,
                    }
                    for r in dict.fromkeys(r.lower() for r in recipients)
                ],
            )
        return queue_id

    async def enqueue_notice(
        self,
        *,
        source: str,
        to: str,
        body: bytes,
        local_domains: Iterable[str],
        peer: str | None,
        session: AsyncSession | Statements | None = None,
    ) -> str:
        """Queue a notification (a DSN or an MDN) for `to`: the null reverse-path (RFC 5321 §4.5.5, RFC 8098
        §2.1), so that nothing ever answers it; `peer` names what it reports on."""
        return await self.enqueue(
            source=source,
            sender="",
            recipients=[to],
            body=body,
            local_domains=local_domains,
            peer=peer,
            session=session,
        )

    async def claim(
        self,
        *,
        owner: str,
        lease: timedelta,
        limit: int = 100,
        now: datetime | None = None,
        held: Mapping[str, int] | None = None,
        domain_cap: int | None = None,
    ) -> Claim:
        """Take up to `limit` due recipients for `lease`. With `domain_cap`, no domain ends up with more than
        that many recipients held, counting those the caller already `held` (per domain): a slow peer's
        backlog then cannot fill the caller's capacity."""
        now = now or utcnow()
        held = held or {}
        full = [d for d, n in held.items() if domain_cap is not None and n >= domain_cap]
        marks, params = bound_list("d", full)
        busy = f" AND domain NOT IN ({marks})" if full else ""
        async with self.db.raw_writing() as tx:
            skip = f"{tx.for_update} SKIP LOCKED" if tx.for_update else ""
            due = await tx.execute(_CLAIMABLE.format(busy=busy) + skip, {"now": now, "limit": limit, **params})
            ids, taken = [], Counter[str]()
            for rid, domain in due:
                if domain_cap is not None and held.get(domain, 0) + taken[domain] >= domain_cap:
                    continue  # left unleased: another worker, or this one once its domain has room
                taken[domain] += 1
                ids.append(rid)
            more = bool(full) or len(due) == limit or len(ids) < len(due)
            if not ids:
                return Claim(more=more)
            marks, params = bound_list("r", ids)
            await tx.execute(_LEASE.format(marks=marks), {**params, "owner": owner, "until": now + lease})
            rows = await tx.execute(_CLAIMED.format(marks=marks), params)
        jobs = []
        for row in rows:
            rid, rcpt, domain, local, attempts = row[:5]
            queue_id, source, sender, principal, peer, mid, size, created, receipt, final = row[5:]
            envelope = Envelope(
                queue_id, source, sender, principal, peer, mid, size, utc_datetime(created), receipt, bool(final)
            )
            jobs.append(Job(rid, rcpt, domain, bool(local), attempts, envelope, owner))
        return Claim(jobs, more)

    async def renew(self, owner: str, ids: Sequence[int], lease: timedelta) -> int:
        """Extend `owner`'s leases on recipients `ids` that it still holds (not settled, not taken over by
        another worker); returns how many. A worker renews while it works, so a slow batch does not
        outlive its lease and get delivered a second time by another node."""
        if not ids:
            return 0
        now = utcnow()
        async with self.db.write() as s:
            result = await s.execute(
                update(QueuedRecipient)
                .where(
                    QueuedRecipient.id.in_(ids),
                    QueuedRecipient.lease_owner == owner,
                    QueuedRecipient.status == "pending",
                )
                .values(lease_until=now + lease)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def release(self, owner: str) -> int:
        """Free the leases `owner` held before a restart (its deliveries died with it); returns how many."""
        async with self.db.write() as s:
            result = await s.execute(
                update(QueuedRecipient)
                .where(QueuedRecipient.lease_owner == owner, QueuedRecipient.status == "pending")
                .values(lease_owner=None, lease_until=None)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def body(self, queue_id: str) -> bytes:
        # Read for every delivery attempt (Database.rows: one statement, no transaction machinery).
        rows = await self.db.rows("SELECT body FROM queue_messages WHERE id = :id", {"id": queue_id})
        if not rows:
            raise NotFound(f"no queued message {queue_id}")
        return self.kek.open(rows[0][0], _aad(queue_id))

    async def reseal_bodies(self) -> int:
        """Seal every queued body under the current KEK where a previous one did (KEK rotation); how many.
        One message per transaction: bodies may be large."""
        ids = [row[0] for row in await self.db.rows("SELECT id FROM queue_messages ORDER BY id", {})]
        changed = 0
        for queue_id in ids:
            async with self.db.raw_writing() as tx:
                rows = await tx.execute(
                    "SELECT body FROM queue_messages WHERE id = :id" + tx.for_update,  # noqa: S608 (a constant suffix)
                    {"id": queue_id},
                )
                if not rows:
                    continue  # delivered meanwhile
                try:
                    body = self.kek.reseal(rows[0][0], _aad(queue_id))
                except DecryptionError:
                    raise DecryptionError(
                        f"queued message {queue_id}: no key-encryption key given opens its body"
                    ) from None
                if body is not None:
                    await tx.execute(
                        "UPDATE queue_messages SET body = :body WHERE id = :id", {"body": body, "id": queue_id}
                    )
                    changed += 1
        return changed

    async def envelope(self, queue_id: str) -> Envelope:
        """A queued message's envelope, without reading its body."""
        async with self.db.read() as s:
            m = (
                await s.execute(
                    select(QueuedMessage).options(defer(QueuedMessage.body)).where(QueuedMessage.id == queue_id)
                )
            ).scalar()
        if m is None:
            raise NotFound(f"no queued message {queue_id}")
        return _envelope(m)

    async def settle(
        self,
        s: AsyncSession | AsyncConnection | Statements,
        job: Job,
        status: str,
        *,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        """Record a recipient's outcome inside the caller's transaction (so it commits with the delivery),
        provided the caller still holds its lease; LeaseLost otherwise."""
        tx = self.db.statements(s)
        params: dict[str, Any] = {
            "id": job.recipient_id,
            "owner": job.owner,
            "status": status,
            "attempts": job.attempts + 1,
            "now": utcnow(),
            "error": None if error is None else error[:1000],
            "retry_at": retry_at,
        }
        done = await tx.execute(_SETTLE, params)
        if len(done) != 1:
            # Our lease expired and another worker took the recipient over: raising rolls back whatever
            # this transaction did with it (a mailbox insert), so it is delivered once, by the other.
            raise LeaseLost(
                f"recipient {job.recipient_id} of {job.envelope.queue_id} is no longer leased to {job.owner}"
            )
        if status in FINAL:
            await self._retire(tx, job.envelope.queue_id)

    @staticmethod
    async def _retire(tx: Statements, queue_id: str) -> bool:
        # FINAL's statuses are written out in _OPEN: they are constants, not input.
        if (await tx.execute(_OPEN, {"id": queue_id}))[0][0]:
            return False
        await tx.execute("DELETE FROM queue_messages WHERE id = :id", {"id": queue_id})
        return True

    async def mark(self, job: Job, status: str, *, error: str | None = None, retry_at: datetime | None = None) -> None:
        async with self.db.raw_writing() as tx:
            await self.settle(tx, job, status, error=error, retry_at=retry_at)

    async def retire_if_done(self, queue_id: str) -> bool:
        """Drop the message once every recipient is final; returns whether it was dropped."""
        async with self.db.raw_writing() as tx:
            return await self._retire(tx, queue_id)

    async def recipients(self, queue_id: str) -> list[QueuedRecipient]:
        async with self.db.read() as s:
            return list(
                (
                    await s.execute(
                        select(QueuedRecipient)
                        .where(QueuedRecipient.message_id == queue_id)
                        .order_by(QueuedRecipient.id)
                    )
                ).scalars()
            )

    async def list(self) -> list[dict[str, Any]]:
        async with self.db.read() as s:
            rows = (
                await s.execute(
                    select(QueuedMessage, QueuedRecipient)
                    .options(defer(QueuedMessage.body))  # listing never needs the sealed bodies
                    .join(QueuedRecipient, QueuedRecipient.message_id == QueuedMessage.id)
                    .order_by(QueuedMessage.created_at, QueuedRecipient.id)
                )
            ).all()
        out: dict[str, dict[str, Any]] = {}
        for m, r in rows:
            entry = out.setdefault(
                m.id,
                {
                    "id": m.id,
                    "source": m.source,
                    "sender": m.sender,
                    "size": m.size,
                    "created_at": m.created_at.isoformat(),
                    "recipients": [],
                },
            )
            entry["recipients"].append(
                {
                    "recipient": r.recipient,
                    "status": r.status,
                    "attempts": r.attempts,
                    "next_attempt_at": r.next_attempt_at.isoformat(),
                    "last_error": r.last_error,
                }
            )
        return list(out.values())

    async def retry_now(self, queue_id: str) -> int:
        """Make a message's pending recipients due now; returns how many.

        Leases are left alone: a recipient a worker is relaying at this moment stays its own (freed, it
        would be sent again by the next pass, or by another node at once), and an expired lease can be
        claimed anyway."""
        async with self.db.write() as s:
            if await s.get(QueuedMessage, queue_id) is None:
                raise NotFound(f"no queued message {queue_id}")
            result = await s.execute(
                update(QueuedRecipient)
                .where(QueuedRecipient.message_id == queue_id, QueuedRecipient.status == "pending")
                .values(next_attempt_at=utcnow())
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def delete(self, queue_id: str) -> int:
        """Remove a message from the queue; returns how many recipients were still pending."""
        async with self.db.write() as s:
            if await s.get(QueuedMessage, queue_id) is None:
                raise NotFound(f"no queued message {queue_id}")
            pending = (
                await s.execute(
                    select(func.count())
                    .select_from(QueuedRecipient)
                    .where(QueuedRecipient.message_id == queue_id, QueuedRecipient.status == "pending")
                )
            ).scalar_one()
            await s.execute(delete(QueuedMessage).where(QueuedMessage.id == queue_id))
            return int(pending)
