"""Delivery at acceptance (`_Handler.deliver_now`) under concurrency, on PostgreSQL: row locks, no deadlock."""

from __future__ import annotations

import asyncio
import secrets
import types
from collections import Counter

from sqlalchemy import text

from gateway.smtp.server import _Handler
from gateway.store.crypto import KeyEncryptionKey
from gateway.store.db import Database
from gateway.store.mailboxes import MailboxRepository
from gateway.store.mailstore import Mailstore
from gateway.store.messages import MessageStore
from tests.pg import PostgresCluster

A, B = "alice@ch-test.mssante.fr", "bob@ch-test.mssante.fr"
BODY = b"From: x@ch-test.mssante.fr\r\nSubject: t\r\n\r\nbonjour\r\n"


def test_messages_to_the_same_mailboxes_in_other_orders_do_not_deadlock(pg_cluster: PostgresCluster) -> None:
    """Each delivery locks its folder and account rows; envelopes listing the same mailboxes in other
    orders must still all be delivered at acceptance (unsorted, PostgreSQL detected deadlocks and the
    messages fell back to the queue)."""
    url = pg_cluster.url(pg_cluster.create_database("deliver_now"))

    async def go() -> Counter[str]:
        async with Database(url) as db:
            await db.migrate()
            repo = MailboxRepository(db, KeyEncryptionKey(secrets.token_bytes(32)))
            for address in (A, B):
                await repo.create(address, "PER")
            # The handler's delivery part only: a node of this database and its local domain.
            handler = _Handler.__new__(_Handler)
            handler.cfg = types.SimpleNamespace(node=types.SimpleNamespace(local_domains=["ch-test.mssante.fr"]))  # type: ignore[assignment]
            handler.node = types.SimpleNamespace(db=db, mailboxes=repo)  # type: ignore[assignment]
            handler.mailstore = Mailstore(MessageStore(repo))
            outcomes: Counter[str] = Counter()

            async def one(order: list[str]) -> None:
                done = await handler.deliver_now([(order, BODY)], "s@ch-test.mssante.fr", "<m@ch-test.mssante.fr>", ())
                outcomes["delivered" if done else "queued"] += 1

            for _ in range(10):
                await asyncio.gather(*(one([A, B] if i % 2 else [B, A]) for i in range(8)))
            async with db.read() as s:
                stored = (await s.execute(text("SELECT address, count(*) FROM messages GROUP BY address"))).all()
            outcomes.update({f"stored {a}": n for a, n in stored})
            return outcomes

    assert asyncio.run(go()) == Counter({"delivered": 80, f"stored {A}": 80, f"stored {B}": 80})
