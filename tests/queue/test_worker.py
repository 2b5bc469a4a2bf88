"""The queue worker against a real store: exactly-once local delivery under lease takeover, restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.node import Node
from gateway.queue.store import LeaseLost, Queue
from gateway.queue.worker import DeliveryWorker
from gateway.store.mailstore import Mailstore
from gateway.store.messages import MessageStore
from gateway.store.models import QueuedMessage, QueuedRecipient, StoredMessage, utcnow
from tests.conftest import DOMAIN, NodeDir, copy_node

RCPT = f"boite@{DOMAIN}"


@pytest.fixture
async def node(template_node: NodeDir, tmp_path: Path) -> AsyncIterator[Node]:
    nd = copy_node(template_node, tmp_path / "node")
    async with Node(nd.cfg()) as n:
        await n.mailboxes.create(RCPT, "ORG")
        yield n


async def stored(n: Node) -> int:
    async with n.db.read() as s:
        return int((await s.execute(select(func.count()).select_from(StoredMessage))).scalar_one())


async def test_a_worker_whose_lease_was_taken_over_does_not_deliver(node: Node) -> None:
    queue = Queue(node.db, node.kek)
    await queue.enqueue(
        source="submission",
        sender=RCPT,
        recipients=[RCPT],
        body=b"Subject: x\r\n\r\nx\r\n",
        local_domains=node.cfg.node.local_domains,
    )
    now = utcnow()
    slow = await queue.claim(owner="slow", lease=timedelta(seconds=1), now=now)
    fast = await queue.claim(owner="fast", lease=timedelta(seconds=60), now=now + timedelta(seconds=2))  # expired
    assert [j.recipient for j in fast.jobs] == [RCPT]
    async with node.db.write() as s:  # the slow worker's record is refused and rolled back
        with pytest.raises(LeaseLost):
            await Queue.settle(s, slow.jobs[0], "delivered")
    worker = DeliveryWorker(node, queue, owner="fast")
    await worker._message(fast.jobs[0].envelope.queue_id, fast.jobs)
    assert await stored(node) == 1
    slow_worker = DeliveryWorker(node, queue, owner="slow")
    await slow_worker._deliver_local(slow.jobs[0], b"Subject: x\r\n\r\nx\r\n")  # too late: nothing happens
    assert await stored(node) == 1
    async with node.db.read() as s:  # the message left the queue with its last delivery
        assert (await s.execute(select(func.count()).select_from(QueuedMessage))).scalar_one() == 0


async def test_a_restarted_node_takes_back_its_leases_at_once(node: Node) -> None:
    queue = Queue(node.db, node.kek)
    await queue.enqueue(
        source="submission",
        sender=RCPT,
        recipients=[RCPT, f"x@{DOMAIN}"],
        body=b"a\r\n",
        local_domains=node.cfg.node.local_domains,
    )
    held = await queue.claim(owner="node1", lease=timedelta(minutes=5))
    assert len(held.jobs) == 2
    assert await queue.claim(owner="node1", lease=timedelta(minutes=5)) == type(held)()  # all leased
    assert await queue.release("node1") == 2
    async with node.db.read() as s:
        leased = (await s.execute(select(QueuedRecipient.lease_owner))).scalars().all()
    assert leased == [None, None]
    assert len((await queue.claim(owner="node1", lease=timedelta(minutes=5))).jobs) == 2


async def test_a_full_mailbox_defers_delivery_with_4_2_2(node: Node) -> None:
    body = b"Subject: gros\r\n\r\n" + b"x" * 1000 + b"\r\n"
    await Mailstore(MessageStore(node.mailboxes)).set_quota(RCPT, len(body) - 1)
    queue = Queue(node.db, node.kek)
    queue_id = await queue.enqueue(
        source="submission", sender=RCPT, recipients=[RCPT], body=body, local_domains=node.cfg.node.local_domains
    )
    assert await DeliveryWorker(node, queue).run_once() == 1
    assert await stored(node) == 0
    [rcpt] = await queue.recipients(queue_id)
    assert (rcpt.status, rcpt.attempts, rcpt.last_error) == ("pending", 1, "smtp; 452 4.2.2 mailbox full")
    assert rcpt.next_attempt_at > utcnow() + timedelta(seconds=50)  # the schedule's first step: 1 minute
    await Mailstore(MessageStore(node.mailboxes)).set_quota(RCPT, len(body))  # room made: delivered on retry
    assert await DeliveryWorker(node, queue).run_once(now=utcnow() + timedelta(minutes=2)) == 1
    assert await stored(node) == 1


async def test_a_local_delivery_wakes_the_mailbox_listeners(node: Node) -> None:
    queue = Queue(node.db, node.kek)
    with node.notices.listen(RCPT) as changed:
        await queue.enqueue(
            source="submission",
            sender=RCPT,
            recipients=[RCPT],
            body=b"Subject: x\r\n\r\nx\r\n",
            local_domains=node.cfg.node.local_domains,
        )
        assert not changed.is_set()
        assert await DeliveryWorker(node, queue).run_once() == 1
        assert changed.is_set()
