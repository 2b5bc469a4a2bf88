"""MailboxNotices: a delivery wakes the listeners of that mailbox, and only them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from sqlalchemy import text

from gateway.auth.lockout import LOGIN_CHANNEL, Lockout
from gateway.store.db import Database
from gateway.store.notify import CHANNEL, MAX_PAYLOAD, MailboxNotices, Outbox, PgNoticeBridge, payloads


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


def test_the_outbox_coalesces_addresses_and_drops_lines_it_could_not_send() -> None:
    box = Outbox()
    box.post(CHANNEL, "a@x.fr", coalesce=True)
    box.post(CHANNEL, "a@x.fr", coalesce=True)
    box.post(LOGIN_CHANNEL, "f\ta@x.fr\t192.0.2.1")
    box.post(LOGIN_CHANNEL, "f\ta@x.fr\t192.0.2.1")  # each failure counts
    box.post(LOGIN_CHANNEL, "f\t" + "x" * 2000 + "\t192.0.2.1")  # an untrusted user name, too long to be one
    box.post(CHANNEL, "b@x.fr\nc@x.fr")  # a line is one line
    taken = asyncio.run(box.take())
    assert taken == {CHANNEL: ["a@x.fr"], LOGIN_CHANNEL: ["f\ta@x.fr\t192.0.2.1"] * 2}


async def _eventually(check: Callable[[], bool]) -> bool:
    for _ in range(250):
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


async def test_lockout_events_cross_nodes(pg_url: str) -> None:
    """A guesser spreading attempts over two nodes meets one set of counters."""
    user, ip = "secretariat@ch-test.mssante.fr", "192.0.2.1"
    pair = "pair:" + user + "\0" + ip
    locks = [Lockout(threshold=3, base_delay=10, clock=lambda: 1000.0) for _ in range(2)]
    dbs = [Database(pg_url), Database(pg_url)]
    bridges = [PgNoticeBridge(db, MailboxNotices(), lo) for db, lo in zip(dbs, locks, strict=True)]
    tasks = [asyncio.create_task(b.run()) for b in bridges]
    try:
        for b in bridges:
            await asyncio.wait_for(b.connected.wait(), 10)
        assert locks[0].failure(user, ip) == 0.0
        assert locks[1].failure(user, ip) == 0.0
        assert await _eventually(lambda: all(pair in lo._counts and lo._counts[pair].failures == 2 for lo in locks))
        # The third failure, on node 1: the pair locks there, and node 2 hears of it.
        assert locks[0].failure(user, ip) == 10.0
        assert await _eventually(lambda: locks[1].locked_for(user, ip) == 10.0)
        # A success on node 2 clears the pair on node 1 and makes the address known there.
        locks[1].success(user, ip)
        assert await _eventually(lambda: locks[0].locked_for(user, ip) == 0.0)
        assert locks[0].known(user, ip)
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for db in dbs:
            await db.close()


async def test_an_unlock_is_told_to_the_serving_nodes_at_once(pg_url: str) -> None:
    """`mssgw mailbox unlock` on PostgreSQL: the rows go, and every node drops those counters from memory
    when the transaction commits (no waiting for a reading of the database)."""
    from gateway.store.logins import LoginRecords

    user, other = "secretariat@ch-test.mssante.fr", "accueil@ch-test.mssante.fr"
    node = Lockout(threshold=3, base_delay=10, clock=lambda: 1000.0)
    db = Database(pg_url)
    await db.migrate()
    bridge = PgNoticeBridge(db, MailboxNotices(), node)
    task = asyncio.create_task(bridge.run())
    try:
        await asyncio.wait_for(bridge.connected.wait(), 10)
        for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
            for _ in range(3):
                node.failure(user, ip)
        node.failure(other, "192.0.2.1")
        assert node.locked_for(user, "192.0.2.1") == 10.0
        async with Database(pg_url) as admin:  # the admin command's own connection
            await LoginRecords(admin).unlock(user.upper(), ["::ffff:192.0.2.1"])
        assert await _eventually(lambda: node.locked_for(user, "192.0.2.2") == 0.0)
        assert sorted(node._counts) == [
            "account:" + other,
            "client:192.0.2.2",
            "client:192.0.2.3",
            "pair:" + other + "\x00192.0.2.1",
        ]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await db.close()


def test_malformed_lockout_events_change_nothing() -> None:
    lo = Lockout(threshold=1, base_delay=10, clock=lambda: 1000.0)
    for line in ("", "garbage", "f", "f\tuser@x.fr", "f\tuser@x.fr\t", "x\tuser@x.fr\t192.0.2.1", "s\t\t192.0.2.1"):
        lo.told(line)
    assert lo._counts == {}
    assert lo._known == {}
    lo.told("f\tuser@x.fr\t192.0.2.1")
    assert lo.locked_for("user@x.fr", "192.0.2.1") == 10.0
    lo.told("f\t\t192.0.2.7")  # a certificate login's failure: the address alone
    assert lo._counts["client:192.0.2.7"].failures == 1


async def test_a_user_name_postgresql_cannot_carry_does_not_lose_the_events_sent_with_it(pg_url: str) -> None:
    """AUTH LOGIN's user name is any bytes, NUL included; PostgreSQL text refuses NUL, so the NOTIFY carrying
    that failure failed with every event batched with it (a guesser's real attempts among them: each node
    then counted only its own) and the connection was dropped. The name cannot be an account: the failure
    is told as the client's only."""
    user, ip = "secretariat@ch-test.mssante.fr", "192.0.2.1"
    locks = [Lockout(threshold=3, wide_threshold=20, base_delay=10, clock=lambda: 1000.0) for _ in range(2)]
    dbs = [Database(pg_url), Database(pg_url)]
    bridges = [PgNoticeBridge(db, MailboxNotices(), lo) for db, lo in zip(dbs, locks, strict=True)]
    tasks = [asyncio.create_task(b.run()) for b in bridges]
    try:
        for b in bridges:
            await asyncio.wait_for(b.connected.wait(), 10)
        locks[0].failure("x\0" + user, ip)
        locks[0].failure(user, ip)  # the same batch
        locks[0].failure("x\t" + user, ip)
        pair, client = "pair:" + user + "\0" + ip, "client:" + ip
        assert await _eventually(lambda: pair in locks[1]._counts and locks[1]._counts[client].failures == 3)
        assert bridges[0].connected.is_set()
        assert sorted(locks[1]._counts) == sorted([pair, client, "account:" + user])
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for db in dbs:
            await db.close()
