"""MailboxNotices: a delivery wakes the listeners of that mailbox, and only them."""

from __future__ import annotations

import asyncio

from gateway.store.notify import MailboxNotices


async def test_a_notice_wakes_the_mailbox_listeners_only() -> None:
    notices = MailboxNotices()
    with notices.listen("Alice@ch-test.mssante.fr") as alice, notices.listen("bob@ch-test.mssante.fr") as bob:
        assert notices.listeners("alice@CH-TEST.mssante.fr") == 1
        notices.publish("alice@ch-test.mssante.fr")
        await asyncio.wait_for(alice.wait(), 1)
        assert not bob.is_set()
    assert notices.listeners("alice@ch-test.mssante.fr") == 0
    notices.publish("alice@ch-test.mssante.fr")  # nobody listening: nothing to do, no error
