"""MailboxNotices: a delivery wakes the listeners of that mailbox, and only them."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import text

from gateway.store.db import Database
from gateway.store.notify import MAX_PAYLOAD, MailboxNotices, PgNoticeBridge, payloads


async def test_a_notice_wakes_the_mailbox_listeners_only() -> None:
    notices = MailboxNotices()
    with notices.listen("Alice@ch-test.mssante.fr") as alice, notices.listen("bob@ch-test.mssante.fr") as bob:
        assert notices.listeners("alice@CH-TEST.mssante.fr") == 1
        notices.publish("alice@ch-test.mssante.fr")
        await asyncio.wait_for(alice.wait(), 1)
        assert not bob.is_set()
    assert notices.listeners("alice@ch-test.mssante.fr") == 0
    notices.publish("alice@ch-test.mssante.fr")  # nobody listening: nothing to do, no error


def test_payloads_are_cut_under_postgresql_limit() -> None:
    addresses = [f"{'x' * 60}{i:05d}@ch-test.mssante.fr" for i in range(400)]
    out = payloads(addresses)
    assert [p.count("\n") + 1 for p in out] == [82, 82, 82, 82, 72]  # 85 bytes each with its newline
    assert all(len(p.encode()) <= MAX_PAYLOAD for p in out)
    assert [a for p in out for a in p.split("\n")] == addresses
    assert payloads([]) == []


async def _bridged(url: str) -> tuple[Database, MailboxNotices, PgNoticeBridge, asyncio.Task[None]]:
    db = Database(url)
    notices = MailboxNotices()
    bridge = PgNoticeBridge(db, notices)
    task = asyncio.create_task(bridge.run())
    await asyncio.wait_for(bridge.connected.wait(), 10)
    return db, notices, bridge, task


async def _stop(db: Database, task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await db.close()


async def test_notices_cross_nodes_through_postgresql(pg_url: str) -> None:
    """Two nodes' notices on one database: what one publishes wakes the other's listeners of that mailbox only."""
    db1, one, _, t1 = await _bridged(pg_url)
    db2, two, _, t2 = await _bridged(pg_url)
    try:
        with (
            two.listen("alice@ch-test.mssante.fr") as alice_there,
            two.listen("bob@ch-test.mssante.fr") as bob_there,
            one.listen("alice@ch-test.mssante.fr") as alice_here,
        ):
            one.publish("Alice@CH-TEST.mssante.fr")
            assert alice_here.is_set()  # at once, locally
            alice_here.clear()
            await asyncio.wait_for(alice_there.wait(), 5)
            await asyncio.sleep(0.3)  # the notification comes back on node 1's own connection: skipped
            assert not alice_here.is_set()
            assert not bob_there.is_set()
            # A burst over many mailboxes crosses too (several payloads).
            many = [f"p{i:04d}@ch-test.mssante.fr" for i in range(600)]
            with two.listen(many[-1]) as last:
                for a in many:
                    one.publish(a)
                await asyncio.wait_for(last.wait(), 5)
    finally:
        await _stop(db1, t1)
        await _stop(db2, t2)


async def test_a_lost_notice_connection_is_replaced_and_wakes_every_listener(pg_url: str) -> None:
    db1, one, _, t1 = await _bridged(pg_url)
    db2, two, bridge2, t2 = await _bridged(pg_url)
    try:
        with two.listen("alice@ch-test.mssante.fr") as alice, two.listen("bob@ch-test.mssante.fr") as bob:
            # The database ends node 2's notice connection (a restart, a failover, an admin).
            old = bridge2.pid
            async with db1.engine.connect() as conn:
                ended = await conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": old})
            assert ended is True
            for _ in range(500):
                if bridge2.connected.is_set() and bridge2.pid != old:
                    break
                await asyncio.sleep(0.02)
            assert bridge2.pid != old
            # Whatever changed meanwhile is unknown: every listener is woken once.
            assert alice.is_set()
            assert bob.is_set()
            alice.clear()
            bob.clear()
            one.publish("bob@ch-test.mssante.fr")
            await asyncio.wait_for(bob.wait(), 5)
            assert not alice.is_set()
    finally:
        await _stop(db1, t1)
        await _stop(db2, t2)
