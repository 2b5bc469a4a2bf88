"""The queue's rows on both backends: enqueue, claim, settle (retries, errors, lost leases), retirement.
The hot statements are plain SQL (Database.raw_writing / statements): what they write must read back
through the ORM as the ORM would have written it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from gateway.queue.store import Claim, LeaseLost, Queue
from gateway.store.crypto import KeyEncryptionKey
from gateway.store.db import Database
from gateway.store.models import QueuedMessage, QueuedRecipient
from tests.store.conftest import db_url, kek, store_db  # noqa: F401 (fixtures on both backends)

T0 = datetime(2026, 11, 23, 8, 0, 0, 123456, tzinfo=UTC)
LOCAL = "ch-test.mssante.fr"


async def _recipients(db: Database) -> list[QueuedRecipient]:
    async with db.read() as s:
        return list((await s.execute(select(QueuedRecipient).order_by(QueuedRecipient.id))).scalars())


async def test_enqueue_claim_settle_and_retire(store_db: Database, kek: KeyEncryptionKey) -> None:  # noqa: F811
    queue = Queue(store_db, kek)
    queue_id = await queue.enqueue(
        source="submission",
        sender="claire@ch-test.mssante.fr",
        recipients=["Paul@Autre.mssante.fr", "lucas@ch-test.mssante.fr", "paul@autre.mssante.fr"],
        body=b"Subject: x\r\n\r\ny\r\n",
        local_domains=[LOCAL],
        principal="claire@ch-test.mssante.fr",
        header_message_id="<m1@ch-test.mssante.fr>",
    )
    assert await queue.body(queue_id) == b"Subject: x\r\n\r\ny\r\n"
    envelope = await queue.envelope(queue_id)
    assert (envelope.sender, envelope.principal, envelope.size, envelope.header_message_id) == (
        "claire@ch-test.mssante.fr",
        "claire@ch-test.mssante.fr",
        17,
        "<m1@ch-test.mssante.fr>",
    )
    assert envelope.created_at.tzinfo == UTC
    assert abs(envelope.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    rows = await _recipients(store_db)
    assert [(r.recipient, r.domain, r.local, r.status, r.attempts) for r in rows] == [
        ("paul@autre.mssante.fr", "autre.mssante.fr", False, "pending", 0),  # once, lower-cased
        ("lucas@ch-test.mssante.fr", LOCAL, True, "pending", 0),
    ]

    claim = await queue.claim(owner="n1", lease=timedelta(seconds=60), now=datetime.now(UTC) + timedelta(seconds=1))
    remote, local = claim.jobs
    due = (await _recipients(store_db))[1].next_attempt_at
    await queue.mark(remote, "pending", error="smtp; 421 4.4.2 try later", retry_at=T0)
    await queue.mark(local, "delivered")
    rows = await _recipients(store_db)
    assert [(r.status, r.attempts, r.last_error, r.next_attempt_at, r.lease_owner) for r in rows] == [
        ("pending", 1, "smtp; 421 4.4.2 try later", T0, None),
        ("delivered", 1, None, due, None),  # neither given: both kept
    ]
    with pytest.raises(LeaseLost, match="is no longer leased to n1"):  # settled already: no lease held
        await queue.mark(remote, "relayed")

    again = await queue.claim(owner="n2", lease=timedelta(seconds=60), now=T0 + timedelta(seconds=1))
    assert [(j.recipient, j.attempts) for j in again.jobs] == [("paul@autre.mssante.fr", 1)]
    await queue.mark(again.jobs[0], "pending")  # neither error nor retry time: the recorded ones stay
    rows = await _recipients(store_db)
    assert (rows[0].status, rows[0].attempts, rows[0].last_error, rows[0].next_attempt_at) == (
        "pending",
        2,
        "smtp; 421 4.4.2 try later",
        T0,
    )
    last = await queue.claim(owner="n2", lease=timedelta(seconds=60), now=T0 + timedelta(seconds=2))
    await queue.mark(last.jobs[0], "relayed")  # every recipient final: the message leaves the queue
    assert await _recipients(store_db) == []
    async with store_db.read() as s:
        assert (await s.execute(select(QueuedMessage.id))).scalars().all() == []


async def test_a_claim_reads_what_the_orm_reads_and_leases_each_recipient_once(
    store_db: Database,  # noqa: F811
    kek: KeyEncryptionKey,  # noqa: F811
) -> None:
    queue = Queue(store_db, kek)
    queue_id = await queue.enqueue(
        source="relay",
        sender="paul@autre.mssante.fr",
        recipients=["a@autre.mssante.fr", f"b@{LOCAL}"],
        body=b"x",
        local_domains=[LOCAL],
        peer="192.0.2.7",
    )
    lease = timedelta(seconds=60)
    now = datetime.now(UTC) + timedelta(seconds=1)
    assert (await queue.claim(owner="n1", lease=lease, now=now - timedelta(hours=1))).jobs == []  # not due yet
    (first,) = (await queue.claim(owner="n1", lease=lease, now=now, limit=1)).jobs
    assert first.envelope == await queue.envelope(queue_id)  # the ORM's read: same values, created_at in UTC
    assert (first.recipient, first.domain, first.local, first.attempts, first.owner) == (
        "a@autre.mssante.fr",
        "autre.mssante.fr",
        False,
        0,
        "n1",
    )
    assert first.local is False
    assert [(r.lease_owner, r.lease_until) for r in await _recipients(store_db)] == [("n1", now + lease), (None, None)]
    (second,) = (await queue.claim(owner="n2", lease=lease, now=now)).jobs  # the first is leased
    assert (second.recipient, second.local, second.owner) == (f"b@{LOCAL}", True, "n2")
    assert second.local is True
    assert (await queue.claim(owner="n3", lease=lease, now=now + lease)).jobs == []  # leases run to their end
    expired = await queue.claim(owner="n3", lease=lease, now=now + lease + timedelta(microseconds=1))
    assert [(j.recipient, j.owner) for j in expired.jobs] == [("a@autre.mssante.fr", "n3"), (f"b@{LOCAL}", "n3")]


async def test_a_claim_leaves_a_full_domain_unleased(store_db: Database, kek: KeyEncryptionKey) -> None:  # noqa: F811
    """`domain_cap` counts what the worker already holds per domain and what this claim takes: a slow
    domain's backlog stays unleased (claimable by another node) and the other domains are claimed."""
    queue = Queue(store_db, kek)
    slow = [f"r{n}@lent.mssante.fr" for n in range(4)]
    for rcpt in [*slow, "a@vif.mssante.fr", "b@vif.mssante.fr", f"c@{LOCAL}"]:
        await queue.enqueue(
            source="submission", sender=f"s@{LOCAL}", recipients=[rcpt], body=b"x", local_domains=[LOCAL]
        )
    lease, now = timedelta(seconds=60), datetime.now(UTC) + timedelta(seconds=1)
    claim = await queue.claim(owner="n1", lease=lease, now=now, held={"lent.mssante.fr": 1}, domain_cap=2)
    assert [j.recipient for j in claim.jobs] == [slow[0], "a@vif.mssante.fr", "b@vif.mssante.fr", f"c@{LOCAL}"]
    assert claim.more  # some were left
    owners = {r.recipient: r.lease_owner for r in await _recipients(store_db)}
    assert [owners[r] for r in slow] == ["n1", None, None, None]
    # Full: the domain is not even looked at, so a small limit still reaches the others.
    full = {"lent.mssante.fr": 2, "vif.mssante.fr": 1}
    # (more: the full domain has its backlog, for when it has room again)
    assert await queue.claim(owner="n1", lease=lease, now=now, held=full, domain_cap=2, limit=1) == Claim(more=True)
    await queue.enqueue(
        source="submission", sender=f"s@{LOCAL}", recipients=["d@vif.mssante.fr"], body=b"x", local_domains=[LOCAL]
    )
    vif = await queue.claim(owner="n1", lease=lease, now=now, held=full, domain_cap=2, limit=1)
    assert ([j.recipient for j in vif.jobs], vif.more) == (["d@vif.mssante.fr"], True)  # the limit: maybe more
    # Without a cap (another node, `run_once`): the rest of the slow domain.
    rest = await queue.claim(owner="n2", lease=lease, now=now)
    assert ([j.recipient for j in rest.jobs], rest.more) == (slow[1:], False)
